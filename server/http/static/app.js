// The chat page: streamed answers through /v1/chat/completions, where each came from (the `editcache` extension),
// corrections through /v1/corrections (a dry run to confirm, then stored), and the namespace's edits (/v1/edits).
// Plain browser JavaScript with no build step; all text from the server goes in through textContent.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { history: [], busy: false };  // history: the OpenAI messages of this conversation

function headers() {
  const h = { "Content-Type": "application/json", "X-Editcache-Namespace": $("namespace").value.trim() || "default" };
  const token = $("token").value.trim();
  if (token) h.Authorization = `Bearer ${token}`;
  return h;
}

async function call(method, path, body) {
  const reply = await fetch(path, { method, headers: headers(), body: body && JSON.stringify(body) });
  const data = await reply.json().catch(() => ({}));
  if (!reply.ok) throw new Error(data.error?.message || `${reply.status} ${reply.statusText}`);
  return data;
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function addMessage(role, text) {
  const item = element("li", `message ${role}`);
  item.append(element("div", "text", text));
  $("messages").append(item);
  item.scrollIntoView({ block: "end" });
  return item;
}

// Reads server-sent events from a fetch body: one parsed JSON object per `data:` line, until [DONE].
async function* events(reply) {
  const reader = reply.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      for (const line of event.split("\n")) {
        if (!line.startsWith("data: ")) continue;
        const data = line.slice(6);
        if (data === "[DONE]") return;
        yield JSON.parse(data);
      }
    }
  }
}

function showProvenance(item, info) {
  const line = element("div", "provenance");
  if (info.edit) {
    line.classList.add("edited");
    line.append(element("span", "badge", `edit · ${info.route}`));
    line.append(element("span", "source", `“${info.edit.prompt} ${info.edit.target_new}” (${info.edit_id.slice(0, 8)}), gate score ${info.gate_score.toFixed(2)}`));
  } else {
    line.append(element("span", "badge", "base model"));
    const why = info.abstained ? "the edit's model abstained" : `best gate score ${info.gate_score.toFixed(2)}`;
    line.append(element("span", "source", why));
  }
  line.dataset.route = info.route;
  line.dataset.editId = info.edit_id || "";
  item.append(line);
  return line;
}

async function ask(question) {
  const turn = { role: "user", content: question };
  state.history.push(turn);
  addMessage("user", question);
  const item = addMessage("assistant", "");
  const text = item.querySelector(".text");
  const maxTokens = Number($("max-tokens").value) || undefined;
  const body = { model: "editcache", messages: state.history, stream: true, max_tokens: maxTokens };
  try {
    const reply = await fetch("/v1/chat/completions", { method: "POST", headers: headers(), body: JSON.stringify(body) });
    if (!reply.ok) {
      const data = await reply.json().catch(() => ({}));
      throw new Error(data.error?.message || `${reply.status} ${reply.statusText}`);
    }
    let info = null;
    for await (const chunk of events(reply)) {
      if (chunk.error) throw new Error(chunk.error.message);
      const delta = chunk.choices?.[0]?.delta?.content;
      if (delta) text.textContent += delta;
      if (chunk.editcache) info = chunk.editcache;
    }
    const answerTurn = { role: "assistant", content: text.textContent };
    state.history.push(answerTurn);
    // Once corrected, the exchange leaves the conversation the model reads: a model shown its own wrong answer
    // tends to repeat it, even when the gate hands it the stored edit. It stays on screen, marked corrected.
    const forget = () => { state.history = state.history.filter((t) => t !== turn && t !== answerTurn); };
    if (info) {
      const line = showProvenance(item, info);
      const correct = element("button", "link correct", "Correct this");
      correct.type = "button";
      correct.addEventListener("click", () => openCorrection(item, question, text.textContent, correct, forget));
      line.append(correct);
    }
    item.classList.add("done");
  } catch (error) {
    state.history.pop();
    item.append(element("div", "error", error.message));
    item.classList.add("done", "failed");
  }
}

function openCorrection(item, question, answer, button, forget) {
  if (item.querySelector(".correction")) return;
  const form = $("correction-template").content.firstElementChild.cloneNode(true);
  form.elements.prompt.value = question;
  const error = form.querySelector(".error");
  const preview = form.querySelector(".preview");
  let checked = null;  // the body the dry run accepted: what "Store" sends

  function request() {
    const body = { question, answer };
    const text = form.elements.text.value.trim();
    const fact = ["subject", "prompt", "target_new"].map((name) => form.elements[name].value.trim());
    if (fact[0] || fact[2]) body.edit = { subject: fact[0], prompt: fact[1], target_new: fact[2] };
    else body.text = text;
    return body;
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.hidden = true;
    preview.hidden = true;
    form.elements.check.disabled = true;
    try {
      const body = request();
      const dry = await call("POST", "/v1/corrections", { ...body, dry_run: true });
      const edit = dry.edit;
      form.querySelector(".fact").textContent = `${edit.prompt} → ${edit.target_new} (subject “${edit.subject}”)`;
      // Free text was read by the model: store the fact it read, exactly as confirmed.
      checked = { question, answer, edit: { subject: edit.subject, prompt: edit.prompt, target_new: edit.target_new,
                                            target_true: edit.target_true, paraphrases: edit.paraphrases } };
      preview.hidden = false;
    } catch (e) {
      error.textContent = e.message;
      error.hidden = false;
    } finally {
      form.elements.check.disabled = false;
    }
  });
  form.elements.store.addEventListener("click", async () => {
    form.elements.store.disabled = true;
    try {
      const stored = await call("POST", "/v1/corrections", checked);
      form.remove();
      forget();
      item.classList.add("corrected");
      button.textContent = "Corrected";
      button.disabled = true;
      toast(`Stored edit ${stored.edit.id.slice(0, 8)}: ${stored.edit.prompt} → ${stored.edit.target_new}`, stored.edit.id);
      await loadEdits();
    } catch (e) {
      error.textContent = e.message;
      error.hidden = false;
      form.elements.store.disabled = false;
    }
  });
  form.elements.cancel.addEventListener("click", () => form.remove());
  item.append(form);
  form.elements.text.focus();
}

function toast(message, undoId) {
  const box = $("toast");
  box.replaceChildren(element("span", "", message));
  if (undoId) {
    const undo = element("button", "", "Undo");
    undo.addEventListener("click", async () => { await removeEdit(undoId); box.hidden = true; });
    box.append(undo);
  }
  box.hidden = false;
  clearTimeout(box.timer);
  box.timer = setTimeout(() => { box.hidden = true; }, 8000);
}

async function removeEdit(id) {
  try {
    await call("DELETE", `/v1/edits/${id}`);
  } catch (e) {
    toast(e.message);
  }
  await loadEdits();
}

async function loadEdits() {
  $("edits-namespace").textContent = $("namespace").value.trim() || "default";
  const list = $("edits");
  try {
    const page = await call("GET", "/v1/edits?page_size=100");
    list.replaceChildren(...page.data.map((edit) => {
      const item = element("li");
      item.dataset.editId = edit.id;
      const what = element("div", "what");
      what.append(element("div", "", `${edit.prompt} → ${edit.target_new}`));
      what.append(element("div", "id", edit.id.slice(0, 12)));
      const remove = element("button", "secondary delete", "Delete");
      remove.addEventListener("click", () => removeEdit(edit.id));
      item.append(what, remove);
      return item;
    }));
    $("edits-empty").hidden = page.total > 0;
    $("edits-more").hidden = page.total <= page.data.length;
    $("edits-more").textContent = `${page.total - page.data.length} more not shown`;
  } catch (e) {
    list.replaceChildren(element("li", "error", e.message));
  }
}

async function loadModel() {
  try {
    const models = await call("GET", "/v1/models");
    $("model").textContent = models.data[0]?.id || "";
  } catch (e) {
    $("model").textContent = e.message;
  }
}

$("ask").addEventListener("submit", async (event) => {
  event.preventDefault();
  const question = $("question").value.trim();
  if (!question || state.busy) return;
  state.busy = true;
  $("send").disabled = true;
  $("question").value = "";
  try {
    await ask(question);
  } finally {
    state.busy = false;
    $("send").disabled = false;
    $("question").focus();
  }
});
$("question").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey) { event.preventDefault(); $("ask").requestSubmit(); }
});
$("new-chat").addEventListener("click", () => { state.history = []; $("messages").replaceChildren(); });
$("refresh").addEventListener("click", loadEdits);
// The namespace is remembered; the token only for this tab's session (a bearer token is a password).
for (const [id, storage] of [["namespace", localStorage], ["token", sessionStorage]]) {
  $(id).value = storage.getItem(`editcache.${id}`) ?? $(id).value;
  $(id).addEventListener("change", () => { storage.setItem(`editcache.${id}`, $(id).value); loadEdits(); loadModel(); });
}
loadModel();
loadEdits();
