// Reads our Vercel UI message stream with the `ai` package as a browser app would.
//
// usage: node ui_stream.mjs <node_modules dir> <package: ai | ai5> <chat url> <prompt>...
//
// A prompt starting with "loop:" runs a client-side tool loop instead: the Chat answers every
// tool call in the browser (onToolCall + addToolOutput, v5: addToolResult) and sends the
// results back by itself (sendAutomaticallyWhen); prints {prompt, requests, messages}.
// For each other prompt: DefaultChatTransport.sendMessages() POSTs the body useChat sends, and
// readUIMessageStream() builds the assistant UIMessage useChat would render. Prints one JSON
// line per prompt: {prompt, message (the last snapshot), snapshots (count), errors (onError
// and thrown, as strings), status} where status is what AbstractChat reports after the turn.
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const [modules, pkg, api, ...prompts] = process.argv.slice(2);
const require = createRequire(join(modules, 'noop.js'));
const ai = await import(pathToFileURL(require.resolve(pkg)).href);

function userMessage(id, text) {
  return { id, role: 'user', parts: [{ type: 'text', text }] };
}

async function read(prompt) {
  const transport = new ai.DefaultChatTransport({ api });
  const errors = [];
  let message = null;
  let snapshots = 0;
  try {
    const stream = await transport.sendMessages({
      chatId: 'chat-1',
      trigger: 'submit-message',
      messageId: undefined,
      abortSignal: undefined,
      messages: [userMessage('u1', prompt)],
    });
    for await (const m of ai.readUIMessageStream({ stream, onError: (e) => errors.push(String(e?.message ?? e)) })) {
      message = m;
      snapshots += 1;
    }
  } catch (e) {
    errors.push(String(e?.message ?? e));
  }
  return { message, snapshots, errors };
}

// The stateful client (what useChat wraps): its status after the turn ("ready" or "error").
class State {
  constructor() { this.status = 'ready'; this.error = undefined; this.messages = []; }
  pushMessage(m) { this.messages = [...this.messages, m]; }
  popMessage() { this.messages = this.messages.slice(0, -1); }
  replaceMessage(i, m) { const copy = [...this.messages]; copy[i] = m; this.messages = copy; }
  snapshot(x) { return structuredClone(x); }
}

class NodeChat extends ai.AbstractChat {
  constructor(init) { const state = new State(); super({ ...init, state }); }
}

async function chatStatus(prompt) {
  let finished = null;
  const chat = new NodeChat({
    transport: new ai.DefaultChatTransport({ api }),
    onError: () => {},
    onFinish: (info) => { finished = { isError: Boolean(info.isError), isDisconnect: Boolean(info.isDisconnect) }; },
  });
  await chat.sendMessage({ text: prompt });
  const last = chat.messages.at(-1);
  return { status: chat.status, finished, chatMessage: last?.role === 'assistant' ? last : null };
}

// What useChat does for tools that run in the browser: answer each call, then send again.
async function toolLoop(prompt) {
  let requests = 0, finishes = 0, settled;
  const done = new Promise((resolve) => { settled = resolve; });
  const transport = new ai.DefaultChatTransport({
    api,
    fetch: (url, init) => { requests += 1; return fetch(url, init); },
  });
  const chat = new NodeChat({
    transport,
    sendAutomaticallyWhen: ai.lastAssistantMessageIsCompleteWithToolCalls,
    onToolCall: ({ toolCall }) => {
      const answer = chat.addToolOutput ?? chat.addToolResult;  // v5 has only addToolResult
      // Not awaited: the ai docs warn that awaiting it inside onToolCall deadlocks.
      answer.call(chat, { tool: toolCall.toolName, toolCallId: toolCall.toolCallId, output: { temp: 21 } });
    },
    onError: (e) => settled({ error: String(e?.message ?? e) }),
    onFinish: () => { finishes += 1; if (finishes === 2) settled({}); },
  });
  await chat.sendMessage({ text: prompt });
  const outcome = await done;
  return { prompt, requests, status: chat.status, messages: chat.messages, ...outcome };
}

for (const prompt of prompts) {
  if (prompt.startsWith('loop:')) { console.log(JSON.stringify(await toolLoop(prompt))); continue; }
  const result = await read(prompt);
  const chat = await chatStatus(prompt);
  console.log(JSON.stringify({ prompt, ...result, ...chat }));
}
