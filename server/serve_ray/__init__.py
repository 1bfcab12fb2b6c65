"""editcache-serve: replicas of the editcache service behind Ray Serve's gRPC proxy, over a shared edit store.

A front end beside server/cli.py: each replica builds the service as editcache-server does (server.app.build_service)
and answers the same editcache.v1 RPCs through the servicers; the proxy picks a replica per call.
"""
