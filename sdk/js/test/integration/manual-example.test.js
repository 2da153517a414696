// The manual's own example (js-realtime-sdk-v2-api.md, "Demo 及示例代码"), translated from
// CoffeeScript line by line; the only change is the `server` option (and `WebSocket` for Node 20).
// A second client, LeanCloud02, answers so that message/receive fire too. Every callback and
// event of the example must fire.
import { it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import realtime from '../../src/index.js';
import { startConfab, APP } from './confab.js';

let server;
before(async () => {
  server = await startConfab();
});
after(async () => {
  await server.stop();
  server.cleanup();
});

it("runs the manual's example unchanged except for `server`", { timeout: 20000 }, async () => {
  const AV = { realtime };
  const fired = new Set();
  const console = { log: (label) => fired.add(label) };

  // LeanCloud02 answers in the conversation once invited. It is online before the example
  // starts: an invitation is pushed to whoever is online when the conversation is created
  // and not replayed later, so a peer still logging in would never answer.
  const peer = AV.realtime({ appId: APP.id, clientId: 'LeanCloud02', server: server.http, WebSocket });
  peer.on('invited', (d) => peer.conv(d.cid).send('hello LeanCloud01'));
  await new Promise((resolve) => peer.on('open', resolve));

  // ---- the example, translated ----
  // 最简的示例代码，请换成自己的 appId，可以通过浏览器多个标签模拟多用户通信
  const appId = APP.id;
  // clientId 就是实时通信中的唯一用户 id
  const clientId = 'LeanCloud01';
  let realtimeObj = undefined;
  let conversationObj = undefined;
  // 创建实时通信实例（支持单页多实例）
  realtimeObj = AV.realtime({
    appId: appId,
    clientId: clientId,
    server: server.http, // the only addition (plus WebSocket on Node 20)
    WebSocket,
  });
  // 当前 SDK 版本
  console.log('当前 SDK 版本是 ' + AV.realtime.version);
  // 实时通信服务连接成功
  realtimeObj.on('open', function () {
    console.log('实时通信服务建立成功！');
    // 创建一个聊天室，conv 是 conversation 的缩写，也可以用 room 方法替换
    conversationObj = realtimeObj.conv(
      {
        members: ['LeanCloud02'],
        data: {
          name: 'LeanCloud',
          m: 123,
        },
      },
      function (data) {
        if (data) {
          console.log('Conversation 创建成功!', data);
        }
      },
    );
  });
  // 当聊天断开时触发
  realtimeObj.on('close', function () {
    console.log('实时通信服务被断开！');
  });
  // 接收断线或者网络状况不佳的事件（断网可测试）
  realtimeObj.on('reuse', function () {
    console.log('正在重新连接。。。');
  });
  // 当 Conversation 被创建时触发，当然您可以使用回调函数来处理，不一定要监听这个事件
  realtimeObj.on('create', function (data) {
    // 向这个 Conversation 添加新的用户
    conversationObj.add(['LeanCloud03', 'LeanCloud04'], function (data) {
      console.log('成功添加用户：', data);
    });
    // 从这个 Conversation 中删除用户
    conversationObj.remove('LeanCloud03', function (data) {
      console.log('成功删除用户：', data);
    });
    // 向这个 Conversation 中发送消息
    conversationObj.send({ abc: 123 }, function (data) {
      console.log('发送的消息服务端已收收到：', data);
    });
    setTimeout(function () {
      // 查看历史消息
      conversationObj.log(function (data) {
        console.log('查看当前 Conversation 最近的聊天记录：', data);
      });
    }, 2000);
    // 当前 Conversation 接收到消息
    conversationObj.receive(function (data) {
      console.log('当前 Conversation 收到消息：', data);
    });
    // 获取当前 Conversation 中的成员信息
    conversationObj.list(function (data) {
      console.log('列出当前 Conversation 的成员列表：', data);
    });
    // 取得当前 Conversation 中的人数
    conversationObj.count(function (num) {
      console.log('取得当前的用户数量：' + num);
    });
  });
  // 监听所有用户加入的情况
  realtimeObj.on('join', function (data) {
    console.log('有用户加入某个当前用户在的 Conversation：', data);
  });
  // 监听所有用户离开的情况
  realtimeObj.on('left', function (data) {
    console.log('有用户离开某个当前用户在的 Conversation：', data);
  });
  // 监听所有 Conversation 中发送的消息
  realtimeObj.on('message', function (data) {
    console.log('某个当前用户在的 Conversation 接收到消息：', data);
  });
  // ---- end of the example ----

  const expected = [
    '当前 SDK 版本是 ' + AV.realtime.version,
    '实时通信服务建立成功！',
    'Conversation 创建成功!',
    '成功添加用户：',
    '成功删除用户：',
    '发送的消息服务端已收收到：',
    '查看当前 Conversation 最近的聊天记录：',
    '当前 Conversation 收到消息：',
    '列出当前 Conversation 的成员列表：',
    '取得当前的用户数量：3', // LeanCloud01, 02, 04 (03 added then removed)
    '有用户加入某个当前用户在的 Conversation：',
    '有用户离开某个当前用户在的 Conversation：',
    '某个当前用户在的 Conversation 接收到消息：',
  ];
  const t0 = Date.now();
  while (expected.some((l) => !fired.has(l)) && Date.now() - t0 < 10000) await new Promise((r) => setTimeout(r, 50));
  assert.deepEqual(expected.filter((l) => !fired.has(l)), [], 'callbacks/events that did not fire');
  realtimeObj.close();
  peer.close();
  await new Promise((r) => setTimeout(r, 20));
  assert.ok(fired.has('实时通信服务被断开！'), 'close');
  // 'reuse' needs a broken connection: covered by server.test.js "reconnect across a server restart".
});
