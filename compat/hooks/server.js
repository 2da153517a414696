// A LeanEngine app on the unmodified leanengine@3.8.0 package: Confab's hook receiver.
// It defines every realtime hook with the package's own AV.Cloud.onIM* functions and
// serves them with AV.express(), as an app deployed on LeanEngine would. Behaviour is
// chosen by the message content / names the test sends; two extra plain routes let the
// test read what arrived (GET /__log) and make notifying hooks fail (POST /__mode/<mode>:
// `fail` answers 500, `hang` never answers, `garbage` answers 200 with a body that is not
// JSON, `record-hang` records the call and then never answers, `ok` works again; GET /__refused counts the notifying calls so refused).
'use strict';
const http = require('http');
const AV = require('leanengine');

AV.init({
  appId: process.env.LEANCLOUD_APP_ID,
  appKey: process.env.LEANCLOUD_APP_KEY,
  masterKey: process.env.LEANCLOUD_APP_MASTER_KEY,
  hookKey: process.env.LEANCLOUD_APP_HOOK_KEY,
  // Never called by these hooks (they use no storage); required by leancloud-storage 4.
  serverURL: process.env.LEANCLOUD_API_SERVER || 'http://127.0.0.1:9',
});

const log = [];
let mode = 'ok';
let refused = 0;
const NOTIFYING = [
  '_messageSent', '_receiversOffline', '_conversationStarted', '_conversationAdded',
  '_conversationRemoved', '_clientOnline', '_clientOffline',
];

function record(hook, request) {
  log.push({
    hook,
    params: request.params,
    key: request.expressReq.headers['idempotency-key'] || null,
  });
}

function notifying(hook) {
  return (request) => {
    if (mode === 'fail') {
      refused += 1;
      throw new Error('backend is failing on purpose');
    }
    record(hook, request);
    if (mode === 'record-hang') return new Promise(() => {});
    return {};
  };
}

AV.Cloud.onIMMessageReceived((request) => {
  record('_messageReceived', request);
  const content = request.params.content;
  if (content === 'forbidden') return { drop: true, code: 1234, detail: 'no bad words' };
  if (content === 'rewrite me') return { content: 'rewritten by the hook' };
  if (content === 'only bob') return { toPeers: ['bob'] };
  if (content === 'make binary') return { bin: true, content: 'AAEC' };
  if (content === 'hang') return new Promise(() => {});
  if (content === 'boom') throw new Error('boom');
  return {};
});

AV.Cloud.onIMMessageUpdate((request) => {
  record('_messageUpdate', request);
  if (request.params.content === 'forbidden edit') return { drop: true, code: 77, detail: 'no' };
  if (request.params.content === 'rewrite edit') return { content: 'edit rewritten' };
  if (request.params.content === 'only bob edit') return { toPeers: ['bob'] };
  if (request.params.content === 'binary edit') return { bin: true, content: 'AAEC' };
  return {};
});

AV.Cloud.onIMConversationStart((request) => {
  record('_conversationStart', request);
  const attr = request.params.attr || {};
  if (attr.name === 'forbidden') return { reject: true, code: 4242, detail: 'no such name' };
  return {};
});

AV.Cloud.onIMConversationAdd((request) => {
  record('_conversationAdd', request);
  if (request.params.members.includes('banned')) return { reject: true, code: 11, detail: 'banned' };
  return {};
});

AV.Cloud.onIMConversationRemove((request) => {
  record('_conversationRemove', request);
  if (request.params.members.includes('keeper')) return { reject: true, code: 12, detail: 'keeper stays' };
  return {};
});

AV.Cloud.onIMConversationUpdate((request) => {
  record('_conversationUpdate', request);
  if (request.params.mute !== undefined && request.params.initBy === 'carol') {
    return { reject: true, code: 14, detail: 'carol may not mute' };
  }
  const attr = request.params.attr || {};
  if (attr.name === 'bad') return { reject: true, code: 13, detail: 'bad name' };
  if (attr.name === 'rename') return { attr: { name: 'renamed by the hook' } };
  return {};
});

AV.Cloud.onIMClientSign((request) => {
  record('_rtmClientSign', request);
  if (request.params.sessionToken === 'good-token') return { client_id: 'signed-user' };
  return false;
});

AV.Cloud.onIMMessageSent(notifying('_messageSent'));
AV.Cloud.onIMReceiversOffline(notifying('_receiversOffline'));
AV.Cloud.onIMConversationStarted(notifying('_conversationStarted'));
AV.Cloud.onIMConversationAdded(notifying('_conversationAdded'));
AV.Cloud.onIMConversationRemoved(notifying('_conversationRemoved'));
AV.Cloud.onIMClientOnline(notifying('_clientOnline'));
AV.Cloud.onIMClientOffline(notifying('_clientOffline'));

const engine = AV.express();
const server = http.createServer((req, res) => {
  if (req.url === '/__log') {
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify(log));
  } else if (req.url === '/__refused') {
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify(refused));
  } else if (req.url.startsWith('/__mode/')) {
    mode = req.url.slice('/__mode/'.length);
    res.end('ok');
  } else if ((mode === 'hang' || mode === 'garbage')
      && NOTIFYING.some((hook) => req.url === `/1.1/functions/${hook}`)) {
    refused += 1;
    if (mode === 'garbage') {
      res.setHeader('content-type', 'application/json');
      res.end('{"result": garbage');
    }
    // 'hang': never answers.
  } else {
    engine(req, res, () => {
      res.statusCode = 404;
      res.end('not found');
    });
  }
});
server.listen(Number(process.env.LEANCLOUD_APP_PORT || 0), '127.0.0.1', () => {
  // The test reads the port from this line.
  console.log(`listening on ${server.address().port}`);
});
