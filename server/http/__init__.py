"""The HTTP front end: an OpenAI-compatible API, EditService over JSON, and the chat page, beside gRPC."""
