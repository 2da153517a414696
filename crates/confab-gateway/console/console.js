// Confab console: hand-written, no framework, no build step; served by the confab binary
// at /console/ under a Content-Security-Policy that allows this file and requests to
// this origin only.
//
// - Sign-in: an app's id and master key, kept in this tab's sessionStorage and sent only
//   in the X-LC-Id / X-LC-Key headers of requests to this server (never in a URL, never
//   logged). Everything goes through the REST API (/1.2/rtm/...) and the console's
//   GET /console/api/stats: the console can do nothing the master key cannot.
// - Data from the server reaches the page only through textContent and DOM nodes,
//   never as markup.
// - Every string of the interface is in the two dictionaries below (English, Chinese);
//   the language follows the browser (zh* is Chinese) until the switch picks one, which
//   localStorage remembers.
(function () {
  'use strict';

  const CREDENTIALS = 'confab-console';
  const LANGUAGE = 'confab-console-lang';
  /** How often the charts poll /console/api/stats. */
  const POLL_MS = 2000;
  /** Points per chart: five minutes at POLL_MS. */
  const POINTS = 150;
  /** Conversations per search (the REST API's own maximum is larger). */
  const SEARCH_LIMIT = 50;
  /** Messages per history page. */
  const HISTORY_PAGE = 20;
  /** Members shown of a conversation (the count is always whole). */
  const MEMBERS_SHOWN = 200;
  /** System conversations listed. */
  const SYSTEM_LIMIT = 50;
  /** The stored body of a recalled message. */
  const RECALLED = '{"_lctype":-127}';
  const COLORS = ['#2563eb', '#9333ea', '#16a34a', '#ea580c'];

  const DICT = {
    en: {
      title: 'Console',
      otherLanguage: '中文',
      signOut: 'Sign out',
      signInTitle: 'Sign in',
      signInHint: "Use an app's id and master key. The key stays in this tab only and is sent only in request headers to this server.",
      appId: 'App id',
      masterKey: 'Master key',
      signIn: 'Sign in',
      signInFailed: 'Wrong app id or master key.',
      expired: 'The server refused the master key: sign in again.',
      tabDashboard: 'Dashboard',
      tabConversations: 'Conversations',
      tabClients: 'Clients',
      tabSystem: 'System conversations',
      chartsHint: 'Updated every 2 seconds from the numbers /metrics reports. Each server node counts its own: this is the node your requests reach.',
      chartSessions: 'Online sessions',
      scopeSessions: 'Sessions of this app and of every app, on this node.',
      seriesAppSessions: 'This app',
      seriesNodeSessions: 'All apps',
      now: 'Now',
      chartMessages: 'Messages per second',
      scopeProcess: 'Whole server node, all apps together.',
      seriesStored: 'Stored',
      seriesDelivered: 'Delivered',
      chartLatency: 'Delivery latency (ms)',
      nowSessions: 'this app {app}, all apps {node}',
      nowMessages: 'stored {stored}/s, delivered {delivered}/s',
      nowLatency: 'p50 {p50} ms, p99 {p99} ms',
      searchBy: 'Search by',
      byMember: 'Member',
      byName: 'Name',
      byId: 'Conversation id',
      searchFor: 'Search for',
      search: 'Search',
      found: '{n} found (at most {max} are shown).',
      colId: 'Id',
      colName: 'Name',
      colKind: 'Kind',
      colMembers: 'Members',
      colLastMessage: 'Last message',
      open: 'Open',
      kindNormal: 'Normal',
      kindRoom: 'Chat room',
      kindSystem: 'System',
      kindTemporary: 'Temporary',
      creator: 'Creator',
      created: 'Created',
      updated: 'Updated',
      members: 'Members',
      moreMembers: '… and {n} more',
      roomMembers: 'In the room now (up to 50)',
      subscribers: 'Subscribers',
      roles: 'Roles',
      noRoles: 'No owner or managers.',
      colClient: 'Client',
      colRole: 'Role',
      attributes: 'Attributes',
      history: 'Message history',
      colTime: 'Time',
      colFrom: 'From',
      colContent: 'Content',
      recall: 'Recall',
      recalled: '(recalled)',
      edited: '(edited)',
      binary: '(binary)',
      newer: 'Newer',
      older: 'Older',
      page: 'Page {n}',
      noHistory: 'No messages.',
      systemHistory: 'A system conversation has no shared history: broadcast to it under System conversations.',
      sendTitle: 'Send a message as a client',
      fromClient: 'From client',
      messageText: 'Message',
      typedText: 'As a text message (_lctype -1); otherwise sent as written',
      send: 'Send',
      sent: 'Sent: {id}',
      confirmRecall: 'Recall this message from {from}?',
      recallDone: 'Recalled {id}.',
      clientId: 'Client id',
      lookUp: 'Look up',
      online: 'online',
      offline: 'offline',
      devicesHint: 'Sessions on this node (in a cluster each node lists its own; online is for the whole cluster).',
      colTag: 'Device tag',
      colProtocol: 'Protocol',
      colVersion: 'Version',
      colSince: 'Logged in',
      noTag: '(none)',
      noSessions: 'No sessions on this node.',
      kickReason: 'Reason (optional, up to 20 characters)',
      kick: 'Kick',
      confirmKick: 'End every session of {id}?',
      kicked: 'Kicked {id}: its sessions were closed with 4115.',
      sysName: 'Name of a new system conversation',
      create: 'Create',
      createdSys: 'Created {id}.',
      use: 'Use',
      noSystem: 'No system conversations yet.',
      broadcastTitle: 'Broadcast to every subscriber',
      systemConversation: 'System conversation id',
      broadcast: 'Broadcast',
      broadcasted: 'Broadcast sent: {id}',
      noResults: 'Nothing found.',
      failed: 'Failed: {error}',
    },
    zh: {
      title: '控制台',
      otherLanguage: 'English',
      signOut: '退出',
      signInTitle: '登录',
      signInHint: '使用应用的 App ID 和 Master Key 登录。密钥只保存在当前标签页中，只通过请求头发送给本服务器。',
      appId: 'App ID',
      masterKey: 'Master Key',
      signIn: '登录',
      signInFailed: 'App ID 或 Master Key 不正确。',
      expired: '服务器拒绝了 Master Key，请重新登录。',
      tabDashboard: '仪表盘',
      tabConversations: '对话',
      tabClients: '客户端',
      tabSystem: '系统对话',
      chartsHint: '每 2 秒更新一次，数据与 /metrics 相同。每个服务器节点各自计数：这里显示的是你的请求到达的节点。',
      chartSessions: '在线会话数',
      scopeSessions: '本节点上本应用的会话数，以及所有应用的会话数。',
      seriesAppSessions: '本应用',
      seriesNodeSessions: '所有应用',
      now: '当前',
      chartMessages: '每秒消息数',
      scopeProcess: '整个服务器节点，所有应用合计。',
      seriesStored: '已存储',
      seriesDelivered: '已投递',
      chartLatency: '投递延迟（毫秒）',
      nowSessions: '本应用 {app}，所有应用 {node}',
      nowMessages: '每秒存储 {stored}，每秒投递 {delivered}',
      nowLatency: 'p50 {p50} 毫秒，p99 {p99} 毫秒',
      searchBy: '搜索方式',
      byMember: '成员',
      byName: '名称',
      byId: '对话 ID',
      searchFor: '搜索内容',
      search: '搜索',
      found: '找到 {n} 个（最多显示 {max} 个）。',
      colId: 'ID',
      colName: '名称',
      colKind: '类型',
      colMembers: '成员数',
      colLastMessage: '最后一条消息',
      open: '打开',
      kindNormal: '普通对话',
      kindRoom: '聊天室',
      kindSystem: '系统对话',
      kindTemporary: '临时对话',
      creator: '创建者',
      created: '创建时间',
      updated: '更新时间',
      members: '成员',
      moreMembers: '…… 还有 {n} 个',
      roomMembers: '当前在聊天室中（最多 50 个）',
      subscribers: '订阅者',
      roles: '角色',
      noRoles: '没有群主或管理员。',
      colClient: '客户端',
      colRole: '角色',
      attributes: '属性',
      history: '消息记录',
      colTime: '时间',
      colFrom: '发送者',
      colContent: '内容',
      recall: '撤回',
      recalled: '（已撤回）',
      edited: '（已修改）',
      binary: '（二进制）',
      newer: '较新',
      older: '较早',
      page: '第 {n} 页',
      noHistory: '没有消息。',
      systemHistory: '系统对话没有共享的消息记录：请在“系统对话”中向它广播。',
      sendTitle: '以客户端身份发送消息',
      fromClient: '发送者（客户端 ID）',
      messageText: '消息内容',
      typedText: '作为文本消息发送（_lctype -1）；否则按原样发送',
      send: '发送',
      sent: '已发送：{id}',
      confirmRecall: '撤回 {from} 的这条消息？',
      recallDone: '已撤回 {id}。',
      clientId: '客户端 ID',
      lookUp: '查询',
      online: '在线',
      offline: '离线',
      devicesHint: '本节点上的会话（集群中每个节点只列出自己的会话；在线状态是整个集群的）。',
      colTag: '设备标签',
      colProtocol: '协议',
      colVersion: '版本',
      colSince: '登录时间',
      noTag: '（无）',
      noSessions: '本节点上没有会话。',
      kickReason: '原因（可选，最多 20 个字符）',
      kick: '踢下线',
      confirmKick: '结束 {id} 的所有会话？',
      kicked: '已将 {id} 踢下线：其会话已以 4115 关闭。',
      sysName: '新系统对话的名称',
      create: '创建',
      createdSys: '已创建 {id}。',
      use: '使用',
      noSystem: '还没有系统对话。',
      broadcastTitle: '向所有订阅者广播',
      systemConversation: '系统对话 ID',
      broadcast: '广播',
      broadcasted: '广播已发送：{id}',
      noResults: '没有找到。',
      failed: '失败：{error}',
    },
  };

  const $ = (id) => document.getElementById(id);

  // ---- language ----------------------------------------------------------------------

  function storedLanguage() {
    try {
      const v = localStorage.getItem(LANGUAGE);
      return v === 'zh' || v === 'en' ? v : null;
    } catch (e) {
      return null;
    }
  }
  let lang = storedLanguage() || (/^zh/i.test(navigator.language || '') ? 'zh' : 'en');

  /** The current language's text for `key`, with `{name}` filled from `args`. */
  function t(key, args) {
    const text = DICT[lang][key];
    if (text === undefined) {
      console.error('console: no text for ' + key);
      return key;
    }
    return args ? text.replace(/\{(\w+)\}/g, (m, k) => (k in args ? String(args[k]) : m)) : text;
  }

  /** Every element with data-i18n gets its text; re-renders what holds translated text. */
  function applyLanguage() {
    document.documentElement.lang = lang === 'zh' ? 'zh-CN' : 'en';
    document.title = 'Confab ' + t('title');
    for (const el of document.querySelectorAll('[data-i18n]')) el.textContent = t(el.dataset.i18n);
    for (const render of rerenders) render();
  }

  // ---- credentials and requests ------------------------------------------------------

  let credentials = null;

  function loadCredentials() {
    try {
      const c = JSON.parse(sessionStorage.getItem(CREDENTIALS) || 'null');
      if (c && typeof c.appId === 'string' && typeof c.masterKey === 'string') return c;
    } catch (e) {
      // Unreadable: sign in again.
    }
    return null;
  }

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  /** One REST call with the master key; resolves to the parsed JSON answer. */
  async function api(method, path, options) {
    const opts = options || {};
    const c = opts.credentials || credentials;
    if (!c) throw new ApiError(401, 401, 'not signed in');
    const headers = { 'X-LC-Id': c.appId, 'X-LC-Key': c.masterKey + ',master' };
    let body;
    if (opts.body !== undefined) {
      headers['Content-Type'] = 'application/json';
      body = JSON.stringify(opts.body);
    }
    const url = opts.query ? path + '?' + new URLSearchParams(opts.query).toString() : path;
    const res = await fetch(url, { method, headers, body, cache: 'no-store', credentials: 'omit' });
    const text = await res.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch (e) {
      data = null;
    }
    if (!res.ok) {
      const message = data && typeof data.error === 'string' ? data.error : 'HTTP ' + res.status;
      const error = new ApiError(res.status, data && data.code, message);
      if (res.status === 401 && !opts.credentials) expired();
      throw error;
    }
    return data;
  }

  /** A path segment. */
  const seg = (s) => encodeURIComponent(s);

  // ---- small DOM helpers -------------------------------------------------------------

  function el(tag, text, className) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (className) e.className = className;
    return e;
  }

  function row(tbody, cells) {
    const tr = document.createElement('tr');
    for (const c of cells) {
      const td = document.createElement('td');
      if (c instanceof Node) td.appendChild(c);
      else td.textContent = c === undefined || c === null ? '' : String(c);
      tr.appendChild(td);
    }
    tbody.appendChild(tr);
    return tr;
  }

  function emptyRow(tbody, text, columns) {
    const tr = row(tbody, [text]);
    tr.className = 'empty';
    tr.firstChild.colSpan = columns;
    tr.firstChild.className = 'muted';
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
  }

  function button(text, className, onClick) {
    const b = el('button', text, className);
    b.type = 'button';
    b.addEventListener('click', onClick);
    return b;
  }

  function when(value) {
    const ms = typeof value === 'number' ? value : Date.parse(value);
    if (!Number.isFinite(ms) || ms <= 0) return '';
    return new Date(ms).toLocaleString(lang === 'zh' ? 'zh-CN' : 'en-GB', { hour12: false });
  }

  let toastTimer = null;
  function toast(text, bad) {
    const box = $('toast');
    box.textContent = text;
    box.className = bad ? 'toast bad' : 'toast';
    box.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => {
      box.hidden = true;
    }, 6000);
  }

  function failed(error) {
    toast(t('failed', { error: error && error.message ? error.message : String(error) }), true);
  }

  /** Runs an async handler of a form or button, reporting its failure. */
  function guarded(fn) {
    return async (event) => {
      if (event && event.preventDefault) event.preventDefault();
      try {
        await fn(event);
      } catch (e) {
        if (!(e instanceof ApiError && e.status === 401)) failed(e);
      }
    };
  }

  /** A message body to send: typed text `{"_lctype":-1,"_lctext":…}`, or as written. */
  function body(text, typed) {
    return typed ? JSON.stringify({ _lctype: -1, _lctext: text }) : text;
  }

  /** What a stored body shows: the text of a typed text message, else the body. */
  function shown(data) {
    if (typeof data !== 'string') return JSON.stringify(data);
    try {
      const v = JSON.parse(data);
      if (v && typeof v === 'object' && typeof v._lctext === 'string') return v._lctext;
    } catch (e) {
      // Not JSON: as written.
    }
    return data;
  }

  // ---- sign in / out -----------------------------------------------------------------

  function showSignedIn(signedIn) {
    $('signin').hidden = signedIn;
    $('console').hidden = !signedIn;
    $('signout').hidden = !signedIn;
    $('who').hidden = !signedIn;
    $('who').textContent = signedIn ? credentials.appId : '';
    document.body.dataset.signedIn = signedIn ? 'yes' : 'no';
  }

  async function signIn(event) {
    event.preventDefault();
    const candidate = { appId: $('app-id').value.trim(), masterKey: $('master-key').value };
    $('signin-error').hidden = true;
    $('signin-button').disabled = true;
    try {
      await api('GET', '/console/api/stats', { credentials: candidate });
      credentials = candidate;
      sessionStorage.setItem(CREDENTIALS, JSON.stringify(candidate));
      $('master-key').value = '';
      start();
    } catch (e) {
      $('signin-error').textContent = e instanceof ApiError && e.status === 401 ? t('signInFailed') : t('failed', { error: e.message });
      $('signin-error').hidden = false;
    } finally {
      $('signin-button').disabled = false;
    }
  }

  function signOut() {
    stopPolling();
    credentials = null;
    sessionStorage.removeItem(CREDENTIALS);
    showSignedIn(false);
  }

  function expired() {
    if (!credentials) return;
    signOut();
    $('signin-error').textContent = t('expired');
    $('signin-error').hidden = false;
  }

  function start() {
    samples.length = 0;
    previous = null;
    showSignedIn(true);
    $('app-id').value = credentials.appId;
    selectTab(currentTab);
    startPolling();
  }

  // ---- tabs --------------------------------------------------------------------------

  let currentTab = 'dashboard';

  function selectTab(name) {
    currentTab = name;
    for (const b of document.querySelectorAll('.tabs button')) b.setAttribute('aria-selected', String(b.dataset.tab === name));
    for (const s of document.querySelectorAll('.tab')) s.hidden = s.id !== 'tab-' + name;
    if (name === 'dashboard') drawCharts();
    if (name === 'system' && credentials) listSystem().catch(failed);
  }

  // ---- live charts -------------------------------------------------------------------

  const samples = [];
  let previous = null;
  let pollTimer = null;
  let polling = false;

  function startPolling() {
    stopPolling();
    polling = true;
    const tick = async () => {
      if (!polling) return;
      try {
        addSample(await api('GET', '/console/api/stats'));
        drawCharts();
      } catch (e) {
        // A lost sample leaves a gap; a refused key signs out (in api).
      }
      if (polling) pollTimer = setTimeout(tick, POLL_MS);
    };
    tick();
  }

  function stopPolling() {
    polling = false;
    clearTimeout(pollTimer);
  }

  /** Per-bucket differences of two histogram readings (a restart counts from zero). */
  function histogramDelta(now, before) {
    const counts = now.counts.map((n, i) => Math.max(0, n - ((before && before.counts[i]) || 0)));
    return { le: now.le, counts, count: counts.reduce((a, b) => a + b, 0) };
  }

  /** The q-quantile of a histogram, interpolated within its bucket (as Prometheus). */
  function quantile(q, h) {
    if (!h.count) return null;
    const rank = q * h.count;
    let seen = 0;
    for (let i = 0; i < h.counts.length; i++) {
      const n = h.counts[i];
      if (seen + n >= rank && n > 0) {
        if (i >= h.le.length) return h.le[h.le.length - 1];
        const lower = i === 0 ? 0 : h.le[i - 1];
        return lower + (h.le[i] - lower) * ((rank - seen) / n);
      }
      seen += n;
    }
    return h.le[h.le.length - 1];
  }

  function addSample(s) {
    const point = { app: s.app.sessions, node: s.node.sessions, stored: null, delivered: null, p50: null, p99: null };
    if (previous) {
      const dt = (s.time - previous.time) / 1000;
      if (dt > 0) {
        point.stored = Math.max(0, s.node.messages_stored - previous.node.messages_stored) / dt;
        point.delivered = Math.max(0, s.node.messages_delivered - previous.node.messages_delivered) / dt;
      }
      const d = histogramDelta(s.node.delivery_seconds, previous.node.delivery_seconds);
      if (d.count > 0) {
        point.p50 = quantile(0.5, d) * 1000;
        point.p99 = quantile(0.99, d) * 1000;
      }
    }
    previous = s;
    samples.push(point);
    if (samples.length > POINTS) samples.shift();
  }

  const fixed = (v, digits) => (v === null || v === undefined ? '–' : v.toFixed(digits));

  /** A round number at or above `v` for the top of an axis. */
  function niceMax(v) {
    if (!(v > 0)) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
    return 10 * p;
  }

  /** A line chart of `series` (arrays aligned with `samples`), newest at the right. */
  function drawChart(canvas, series, colors, digits) {
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth || 480;
    const height = canvas.clientHeight || 200;
    if (canvas.width !== Math.round(width * ratio) || canvas.height !== Math.round(height * ratio)) {
      canvas.width = Math.round(width * ratio);
      canvas.height = Math.round(height * ratio);
    }
    const ctx = canvas.getContext('2d');
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.fillStyle = '#ffffff';
    ctx.fillRect(0, 0, width, height);
    const pad = { left: 46, right: 10, top: 10, bottom: 10 };
    const w = width - pad.left - pad.right;
    const h = height - pad.top - pad.bottom;
    let max = 0;
    for (const values of series) for (const v of values) if (v !== null && v > max) max = v;
    const top = niceMax(max);
    ctx.strokeStyle = '#e5e7eb';
    ctx.lineWidth = 1;
    ctx.fillStyle = '#6b7280';
    ctx.font = '11px system-ui, sans-serif';
    ctx.textAlign = 'right';
    ctx.textBaseline = 'middle';
    for (const f of [0, 0.5, 1]) {
      const y = Math.round(pad.top + h - f * h) + 0.5;
      ctx.beginPath();
      ctx.moveTo(pad.left, y);
      ctx.lineTo(pad.left + w, y);
      ctx.stroke();
      ctx.fillText(fixed(top * f, top * f >= 10 || digits === 0 ? 0 : digits), pad.left - 6, y);
    }
    const step = w / (POINTS - 1);
    const offset = POINTS - samples.length;
    let points = 0;
    // The first series is drawn last, on top: where two lines coincide it shows.
    series.map((values, k) => [values, k]).reverse().forEach(([values, k]) => {
      ctx.strokeStyle = colors[k];
      ctx.lineWidth = 2;
      ctx.lineJoin = 'round';
      ctx.fillStyle = colors[k];
      ctx.beginPath();
      let drawing = false;
      values.forEach((v, i) => {
        if (v === null) {
          drawing = false;
          return;
        }
        if (k === 0) points++;
        const x = pad.left + (offset + i) * step;
        const y = pad.top + h - (v / top) * h;
        if (drawing) ctx.lineTo(x, y);
        else ctx.moveTo(x, y);
        const next = values[i + 1];
        if (!drawing && (next === null || next === undefined)) {
          // A point with no neighbour (one interval with deliveries) shows as a dot.
          ctx.fillRect(x - 3, y - 3, 6, 6);
        }
        drawing = true;
      });
      ctx.stroke();
    });
    canvas.dataset.points = String(points);
    canvas.dataset.peak = String(series[0].reduce((m, v) => (v !== null && v > m ? v : m), 0));
    const last = series[0][series[0].length - 1];
    canvas.dataset.last = last === null || last === undefined ? '' : String(last);
  }

  function drawCharts() {
    if (currentTab !== 'dashboard' || $('console').hidden) return;
    const pick = (k) => samples.map((p) => p[k]);
    drawChart($('chart-sessions'), [pick('app'), pick('node')], [COLORS[0], COLORS[1]], 0);
    drawChart($('chart-messages'), [pick('stored'), pick('delivered')], [COLORS[0], COLORS[2]], 1);
    drawChart($('chart-latency'), [pick('p50'), pick('p99')], [COLORS[0], COLORS[3]], 2);
    const p = samples[samples.length - 1];
    if (!p) return;
    $('now-sessions').textContent = t('nowSessions', { app: p.app, node: p.node });
    $('now-messages').textContent = t('nowMessages', { stored: fixed(p.stored, 1), delivered: fixed(p.delivered, 1) });
    $('now-latency').textContent = t('nowLatency', { p50: fixed(p.p50, 2), p99: fixed(p.p99, 2) });
  }

  // ---- conversations -----------------------------------------------------------------

  /** A regular expression matching `s` literally. */
  const literal = (s) => s.replace(/[\\^$.*+?()[\]{}|#&~-]/g, '\\$&');

  function kindOf(conv) {
    if (conv.sys) return 'system';
    if (conv.tr) return 'room';
    if (conv.temp) return 'temporary';
    return 'normal';
  }
  const KIND_TEXT = { normal: 'kindNormal', room: 'kindRoom', system: 'kindSystem', temporary: 'kindTemporary' };
  const BASE = {
    normal: '/1.2/rtm/conversations',
    temporary: '/1.2/rtm/conversations',
    room: '/1.2/rtm/chatrooms',
    system: '/1.2/rtm/service-conversations',
  };
  /** Keys of a conversation that are not its attributes. */
  const NOT_ATTRIBUTES = ['objectId', 'c', 'm', 'mu', 'tr', 'sys', 'temp', 'unique', 'conv_type', 'createdAt', 'updatedAt', 'lm'];

  let results = null;
  let detail = null; // { conv, kind, extra: {members, label, roles}, pages: [cursor], page: [records] }

  async function search() {
    const field = $('conv-field').value;
    const q = $('conv-q').value.trim();
    if (!q) return;
    const where = field === 'id' ? { objectId: q } : field === 'name' ? { name: { $regex: literal(q), $options: 'i' } } : { m: q };
    const data = await api('GET', '/1.2/rtm/all-conversations', {
      query: { where: JSON.stringify(where), limit: String(SEARCH_LIMIT), order: '-updatedAt' },
    });
    results = Array.isArray(data && data.results) ? data.results : [];
    renderResults();
  }

  function renderResults() {
    const tbody = $('conv-results').tBodies[0];
    clear(tbody);
    if (results === null) {
      $('conv-count').textContent = '';
      return;
    }
    $('conv-count').textContent = t('found', { n: results.length, max: SEARCH_LIMIT });
    if (!results.length) emptyRow(tbody, t('noResults'), 6);
    for (const conv of results) {
      const id = el('code', conv.objectId);
      const members = Array.isArray(conv.m) ? conv.m.length : '';
      const last = conv.lm && conv.lm.iso ? when(conv.lm.iso) : '';
      const open = button(t('open'), 'small', guarded(() => openConversation(conv)));
      const tr = row(tbody, [id, typeof conv.name === 'string' ? conv.name : '', t(KIND_TEXT[kindOf(conv)]), members, last, open]);
      tr.dataset.cid = conv.objectId;
    }
  }

  async function openConversation(conv) {
    const kind = kindOf(conv);
    const base = BASE[kind];
    const cid = seg(conv.objectId);
    const extra = { members: Array.isArray(conv.m) ? conv.m : [], label: 'members', roles: null, count: null };
    if (kind === 'room') {
      const r = await api('GET', base + '/' + cid + '/members');
      extra.members = Array.isArray(r && r.result) ? r.result : [];
      extra.label = 'roomMembers';
    } else if (kind === 'system') {
      const r = await api('GET', base + '/' + cid + '/subscribers/count');
      extra.members = [];
      extra.count = r && typeof r.count === 'number' ? r.count : 0;
      extra.label = 'subscribers';
    } else if (kind === 'normal') {
      const r = await api('GET', base + '/' + cid + '/member-infos');
      extra.roles = Array.isArray(r && r.results) ? r.results : [];
    }
    detail = { conv, kind, base, extra, pages: [null], page: [] };
    $('send-from').value = '';
    $('send-result').textContent = '';
    renderDetail();
    if (kind !== 'system') await loadHistory();
    $('conv-detail').scrollIntoView({ block: 'nearest' });
  }

  function renderDetail() {
    const box = $('conv-detail');
    if (!detail) {
      box.hidden = true;
      return;
    }
    box.hidden = false;
    const { conv, kind, extra } = detail;
    $('conv-name').textContent = typeof conv.name === 'string' ? conv.name : '';
    $('conv-id').textContent = conv.objectId;
    $('conv-kind').textContent = t(KIND_TEXT[kind]);
    $('conv-creator').textContent = typeof conv.c === 'string' ? conv.c : '';
    $('conv-created').textContent = when(conv.createdAt);
    $('conv-updated').textContent = when(conv.updatedAt);
    const attrs = {};
    for (const k of Object.keys(conv)) if (!NOT_ATTRIBUTES.includes(k)) attrs[k] = conv[k];
    $('conv-attrs').textContent = JSON.stringify(attrs, null, 2);
    $('conv-member-label').textContent = t(extra.label);
    $('conv-member-count').textContent = String(extra.count !== null ? extra.count : extra.members.length);
    const list = $('conv-members');
    clear(list);
    for (const m of extra.members.slice(0, MEMBERS_SHOWN)) list.appendChild(el('li', m));
    if (extra.members.length > MEMBERS_SHOWN) list.appendChild(el('li', t('moreMembers', { n: extra.members.length - MEMBERS_SHOWN })));
    const roles = $('conv-roles');
    roles.hidden = extra.roles === null;
    roles.previousElementSibling.hidden = extra.roles === null;
    clear(roles.tBodies[0]);
    if (extra.roles !== null) {
      if (!extra.roles.length) emptyRow(roles.tBodies[0], t('noRoles'), 2);
      for (const r of extra.roles) row(roles.tBodies[0], [r.clientId, r.role]);
    }
    const hasHistory = kind !== 'system';
    $('history').hidden = !hasHistory;
    $('send-form').hidden = !hasHistory;
    $('history-box').querySelector('.pager').hidden = !hasHistory;
    renderHistory();
  }

  async function loadHistory() {
    const cursor = detail.pages[detail.pages.length - 1];
    const query = { limit: String(HISTORY_PAGE) };
    if (cursor) {
      query.timestamp = String(cursor.timestamp);
      query.msgid = cursor.msgid;
    }
    const records = await api('GET', detail.base + '/' + seg(detail.conv.objectId) + '/messages', { query });
    detail.page = Array.isArray(records) ? records : [];
    renderHistory();
  }

  function renderHistory() {
    if (!detail) return;
    const tbody = $('history').tBodies[0];
    clear(tbody);
    const note = $('history-page');
    if (detail.kind === 'system') {
      note.textContent = '';
      emptyRow(tbody, t('systemHistory'), 4);
      $('history').hidden = false;
      return;
    }
    note.textContent = t('page', { n: detail.pages.length });
    $('history-newer').disabled = detail.pages.length <= 1;
    $('history-older').disabled = detail.page.length < HISTORY_PAGE;
    if (!detail.page.length) emptyRow(tbody, t('noHistory'), 4);
    for (const r of detail.page) {
      const recalled = r.data === RECALLED;
      let content = r.bin ? t('binary') : recalled ? t('recalled') : shown(r.data);
      if (!recalled && r['patch-timestamp']) content += ' ' + t('edited');
      const action = recalled ? '' : button(t('recall'), 'small ghost', guarded(() => recall(r)));
      const tr = row(tbody, [when(r.timestamp), r.from, content, action]);
      tr.children[2].className = 'content';
      tr.dataset.mid = r['msg-id'];
      if (recalled) tr.dataset.recalled = 'yes';
    }
  }

  async function recall(r) {
    if (!window.confirm(t('confirmRecall', { from: r.from }))) return;
    const path = detail.base + '/' + seg(detail.conv.objectId) + '/messages/' + seg(r['msg-id']) + '/recall';
    await api('PUT', path, { body: { from_client: r.from, timestamp: r.timestamp } });
    toast(t('recallDone', { id: r['msg-id'] }));
    await loadHistory();
  }

  async function sendMessage() {
    const from = $('send-from').value.trim();
    const text = $('send-text').value;
    const answer = await api('POST', detail.base + '/' + seg(detail.conv.objectId) + '/messages', {
      body: { from_client: from, message: body(text, $('send-typed').checked) },
    });
    $('send-result').textContent = t('sent', { id: answer['msg-id'] });
    $('send-text').value = '';
    detail.pages = [null];
    await loadHistory();
  }

  // ---- clients -----------------------------------------------------------------------

  let client = null; // { id, online, sessions }

  async function lookUp(id) {
    const data = await api('GET', '/1.2/rtm/clients/' + seg(id) + '/sessions');
    client = { id, online: !!data.online, sessions: Array.isArray(data.sessions) ? data.sessions : [] };
    renderClient();
  }

  function renderClient() {
    const box = $('client-result');
    box.hidden = !client;
    if (!client) return;
    $('client-name').textContent = client.id;
    const state = $('client-state');
    state.textContent = t(client.online ? 'online' : 'offline');
    state.className = 'badge ' + (client.online ? 'online' : 'offline');
    state.dataset.online = client.online ? 'yes' : 'no';
    const tbody = $('client-sessions').tBodies[0];
    clear(tbody);
    if (!client.sessions.length) emptyRow(tbody, t('noSessions'), 4);
    for (const s of client.sessions) row(tbody, [s.tag === null ? t('noTag') : s.tag, s.protocol, s.version, when(s.since)]);
  }

  async function kick() {
    if (!client || !window.confirm(t('confirmKick', { id: client.id }))) return;
    const reason = $('kick-reason').value;
    await api('POST', '/1.2/rtm/clients/' + seg(client.id) + '/kick', { body: reason ? { reason } : {} });
    $('kick-result').textContent = t('kicked', { id: client.id });
    await lookUp(client.id);
  }

  // ---- system conversations ----------------------------------------------------------

  let systemList = null;

  async function listSystem() {
    const data = await api('GET', '/1.2/rtm/service-conversations', { query: { limit: String(SYSTEM_LIMIT), order: '-createdAt' } });
    systemList = Array.isArray(data && data.results) ? data.results : [];
    renderSystem();
  }

  function renderSystem() {
    const tbody = $('sys-list').tBodies[0];
    clear(tbody);
    if (systemList === null) return;
    if (!systemList.length) emptyRow(tbody, t('noSystem'), 4);
    for (const conv of systemList) {
      const use = button(t('use'), 'small ghost', () => {
        $('bc-conv').value = conv.objectId;
      });
      const tr = row(tbody, [el('code', conv.objectId), typeof conv.name === 'string' ? conv.name : '', when(conv.createdAt), use]);
      tr.dataset.cid = conv.objectId;
    }
  }

  async function createSystem() {
    const name = $('sys-name').value.trim();
    const answer = await api('POST', '/1.2/rtm/service-conversations', { body: { name } });
    $('sys-created').textContent = t('createdSys', { id: answer.objectId });
    $('bc-conv').value = answer.objectId;
    $('sys-name').value = '';
    await listSystem();
  }

  async function broadcast() {
    const cid = $('bc-conv').value.trim();
    const answer = await api('POST', '/1.2/rtm/service-conversations/' + seg(cid) + '/broadcasts', {
      body: { from_client: $('bc-from').value.trim(), message: body($('bc-text').value, $('bc-typed').checked) },
    });
    $('bc-result').textContent = t('broadcasted', { id: answer['msg-id'] });
    $('bc-text').value = '';
  }

  // ---- wiring ------------------------------------------------------------------------

  const rerenders = [drawCharts, renderResults, renderDetail, renderClient, renderSystem];

  function checkDictionaries() {
    const en = Object.keys(DICT.en).sort().join();
    const zh = Object.keys(DICT.zh).sort().join();
    if (en !== zh) console.error('console: the English and Chinese dictionaries have different keys');
    for (const node of document.querySelectorAll('[data-i18n]')) {
      if (!(node.dataset.i18n in DICT.en)) console.error('console: no text for ' + node.dataset.i18n);
    }
  }

  function init() {
    checkDictionaries();
    $('lang').addEventListener('click', () => {
      lang = lang === 'zh' ? 'en' : 'zh';
      try {
        localStorage.setItem(LANGUAGE, lang);
      } catch (e) {
        // Private mode: the choice lasts for this page.
      }
      applyLanguage();
    });
    $('signin-form').addEventListener('submit', signIn);
    $('signout').addEventListener('click', signOut);
    for (const b of document.querySelectorAll('.tabs button')) b.addEventListener('click', () => selectTab(b.dataset.tab));
    $('conv-search').addEventListener('submit', guarded(search));
    $('history-older').addEventListener(
      'click',
      guarded(async () => {
        const oldest = detail.page[detail.page.length - 1];
        if (!oldest) return;
        detail.pages.push({ timestamp: oldest.timestamp, msgid: oldest['msg-id'] });
        await loadHistory();
      }),
    );
    $('history-newer').addEventListener(
      'click',
      guarded(async () => {
        if (detail.pages.length > 1) detail.pages.pop();
        await loadHistory();
      }),
    );
    $('send-form').addEventListener('submit', guarded(sendMessage));
    $('client-form').addEventListener('submit', guarded(() => lookUp($('client-id').value.trim())));
    $('kick-form').addEventListener('submit', guarded(kick));
    $('sys-create').addEventListener('submit', guarded(createSystem));
    $('broadcast-form').addEventListener('submit', guarded(broadcast));
    window.addEventListener('resize', drawCharts);

    applyLanguage();
    // The app id may come in the URL (it is no secret); the key never does.
    const appId = new URLSearchParams(location.search).get('appId');
    if (appId) $('app-id').value = appId;
    credentials = loadCredentials();
    if (credentials) start();
    else showSignedIn(false);
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
  else init();
})();
