// Type declarations for confab-realtime: the leancloud-realtime 2.x `AV.realtime` API.
// Every method of the manual returns the very object it was called on (`this`), with or without
// its callback, so calls chain as in 2.x; no object is a thenable. Callbacks are success
// callbacks. The Promise style has names of its own: each request method `name` has a
// `nameAsync` twin that takes the same arguments without the callback and returns a Promise of
// what the callback would get (rejected with a RealtimeError on failure).

/** The constructor shape the SDK needs: browsers' WebSocket, undici's, or the `ws` package. */
export interface WebSocketConstructor {
  new (url: string): any;
}

/** Signature from the app's backend (LeanCloud §5): copied into the frame as s/t/n. */
export interface Signature {
  signature: string;
  timestamp: number;
  nonce: string;
}

/** What authFun is asked to sign. `action` is 'invite' for add/join, 'kick' for remove. */
export interface AuthData {
  clientId: string;
  members?: string[];
  convId?: string;
  action?: 'invite' | 'kick';
}

export type AuthFun =
  | ((data: AuthData, callback: (result: Signature | null) => void) => void)
  | ((data: AuthData) => Promise<Signature | null>);

export interface Options {
  /** Application id. */
  appId: string;
  /** Unique id of this client (peerId on the wire). */
  clientId: string;
  /**
   * `http(s)://` base URL of a Confab server (the SDK asks `<server>/v1/route?appId=…` for the
   * WebSocket URL) or a `ws(s)://` URL to connect to directly. Default in browsers: location.origin.
   */
  server?: string;
  /** WebSocket implementation; default: AV.realtime.config({WebSocket}), then globalThis.WebSocket. */
  WebSocket?: WebSocketConstructor;
  /** Signs session open, conversation creation and membership changes. */
  authFun?: AuthFun;
  /** Alias of authFun (2.x name). */
  auth?: AuthFun;
  /** HTML-escape received plain-text messages and rich-media text. Default false. */
  encodeHTML?: boolean;
  /** Milliseconds without any frame before a `{}` heartbeat; the connection is dropped after twice that. Default 60000. */
  heartbeat?: number;
  /** Milliseconds a request may wait for its answer, including time queued while offline. Default 30000. */
  timeout?: number;
  /** First reconnect delay in ms (doubles each attempt, with jitter). Default 1000. */
  minDelay?: number;
  /** Longest reconnect delay in ms. Default 30000. */
  maxDelay?: number;
  /** Accepted and ignored (2.x options that only chose LeanCloud hosts). */
  secure?: boolean;
  region?: string;
}

/** Error passed to rejections and `error` listeners. */
export interface RealtimeError extends Error {
  /** LeanCloud numeric code from the server, or 'TIMEOUT' | 'CLOSED' | 'ROUTE' | 'SIGNATURE'. */
  code: number | 'TIMEOUT' | 'CLOSED' | 'ROUTE' | 'SIGNATURE';
  /** Symbolic reason from the server, e.g. 'CONVERSATION_NOT_FOUND'. */
  reason?: string;
  detail?: string;
  /** The request frame that failed. */
  request?: Frame;
}

/** A raw protocol frame. */
export interface Frame {
  cmd?: string;
  op?: string;
  i?: number;
  peerId?: string;
  [key: string]: any;
}

export type MediaType = 'text' | 'image' | 'audio' | 'video' | 'location' | 'file';

/** A received rich-media message (`_lctype` -1…-6). */
export interface MediaMessage {
  type: MediaType;
  text?: string;
  attr?: any;
  url?: string;
  metaData?: any;
  location?: { longitude: number; latitude: number };
}

/** Message payload after parsing: plain string, rich media, or any other JSON object. */
export type MessageBody = string | MediaMessage | Record<string, any>;

/** `message` event / receive() callback. */
export interface Message extends Frame {
  cid: string;
  id: string;
  msg: MessageBody;
  fromPeerId: string;
  timestamp: number;
  transient?: boolean;
  offline?: boolean;
}

/** `receipt` event / receipt() callback. */
export interface Receipt extends Frame {
  cid: string;
  id: string;
  t: number;
  from?: string;
}

/** send() result (the ack): `uid` is the message id, `t` its server timestamp. */
export interface Ack extends Frame {
  uid: string;
  t: number;
}

/** log() item, oldest first. */
export interface LogItem {
  from: string;
  fromPeerId: string;
  data: MessageBody;
  msg: MessageBody;
  timestamp: number;
  msgId: string;
  [key: string]: any;
}

/** Conversation record from query(). */
export interface ConversationRecord {
  objectId: string;
  name?: string;
  attr?: any;
  m?: string[];
  [key: string]: any;
}

export interface ConvOptions {
  members?: string[];
  name?: string;
  attr?: Record<string, any>;
  /** 2.x manual name of attr. */
  data?: Record<string, any>;
  transient?: boolean;
  unique?: boolean;
}

export interface QueryOptions {
  where?: Record<string, any>;
  sort?: string;
  limit?: number;
  skip?: number;
  compact?: boolean;
  withLastMessages?: boolean;
}

export interface SendOptions {
  receipt?: boolean;
  transient?: boolean;
  type?: MediaType;
}

export interface LogOptions {
  /** Timestamp anchor: return messages older than this. */
  t?: number;
  /** Message id anchor (with t). */
  mid?: string;
  /** Default 20. */
  limit?: number;
}

/** Conversation member notification (`join`, `left`, `invited`, `kicked`, `members*`). */
export interface MembersEvent extends Frame {
  cid: string;
  initBy: string;
  m?: string[];
}

export interface EventMap {
  open: Frame;
  close: { code?: any; reconnecting?: boolean };
  reuse: { attempt: number; delay: number };
  create: Frame & { cid: string };
  join: MembersEvent;
  left: MembersEvent;
  invited: MembersEvent;
  kicked: MembersEvent;
  membersjoined: MembersEvent;
  membersleft: MembersEvent;
  update: Frame & { cid: string; attr?: any };
  message: Message;
  receipt: Receipt;
  error: RealtimeError;
}

export type EventData<K extends string> = K extends keyof EventMap ? EventMap[K] : any;

export interface Conversation {
  /** Conversation id ('' until a new conversation is created). */
  id: string;
  name: string;
  attr: any;
  add(clientIds: string | string[], callback?: (reply: Frame) => void): this;
  remove(clientIds: string | string[], callback?: (reply: Frame) => void): this;
  join(callback?: (reply: Frame) => void): this;
  /** Leave the conversation (the manual's "clientIdList" parameter of leave is a copy-paste slip: there is none). */
  leave(callback?: (reply: Frame) => void): this;
  send(data: string | object, callback?: (ack: Ack) => void): this;
  /** A transient message has no ack: the callback runs once it is written, without an argument. */
  send(data: string | object, options: SendOptions & { transient: true }, callback?: () => void): this;
  send(data: string | object, options: SendOptions, callback?: (ack: Ack) => void): this;
  log(callback?: (logs: LogItem[]) => void): this;
  log(options: LogOptions, callback?: (logs: LogItem[]) => void): this;
  /** The callback is required (必须). */
  receive(callback: (message: Message) => void): this;
  /** The callback is required (必须). */
  receipt(callback: (receipt: Receipt) => void): this;
  /** The callback is required (必须); without one this throws. Promise style: listAsync(). */
  list(callback: (members: string[]) => void): this;
  /** The callback is required (必须); without one this throws. Promise style: countAsync(). */
  count(callback: (count: number) => void): this;
  update(data: { name?: string; attr?: any; [key: string]: any }, callback?: (reply: Frame) => void): this;
  /** The callback is required (必须); without one this throws. Promise style: pingAsync(). */
  ping(clientIds: string | string[], callback: (online: string[]) => void): this;

  // Promise style: the same requests, resolved with what the callback would get.
  addAsync(clientIds: string | string[]): Promise<Frame>;
  removeAsync(clientIds: string | string[]): Promise<Frame>;
  joinAsync(): Promise<Frame>;
  leaveAsync(): Promise<Frame>;
  sendAsync(data: string | object, options: SendOptions & { transient: true }): Promise<void>;
  sendAsync(data: string | object, options?: SendOptions): Promise<Ack>;
  logAsync(options?: LogOptions): Promise<LogItem[]>;
  listAsync(): Promise<string[]>;
  countAsync(): Promise<number>;
  updateAsync(data: { name?: string; attr?: any; [key: string]: any }): Promise<Frame>;
  pingAsync(clientIds: string | string[]): Promise<string[]>;
}

export type Room = Conversation;

export interface RealtimeObject {
  clientId: string;
  /** Called for you by AV.realtime(); after close() it connects again. The callback gets this object. */
  open(callback?: (realtime: this) => void): this;
  close(): this;
  /** Built-in events get typed data; any other name is a custom event (see emit). Both arguments are required. */
  on<K extends string>(event: K, callback: (data: EventData<K>) => void): this;
  once<K extends string>(event: K, callback: (data: EventData<K>) => void): this;
  /** Removes the function from the event (every registration of it, once() ones included). Both arguments are required. */
  off(event: string, callback: (data?: any) => void): this;
  emit(event: string, data?: any): this;
  /** Creates a conversation; returns its object at once (usable before it exists); the callback gets that same object. */
  conv(options: ConvOptions, callback?: (conversation: Conversation) => void): Conversation;
  conv(callback: (conversation: Conversation) => void): Conversation;
  /** An existing conversation; the callback gets the returned object, or null when there is no such conversation. */
  conv(convId: string, callback?: (conversation: Conversation | null) => void): Conversation;
  room: RealtimeObject['conv'];
  /** The callback is required (必须); without one this throws. Promise style: queryAsync(). */
  query(callback: (results: ConversationRecord[]) => void): this;
  query(options: QueryOptions, callback: (results: ConversationRecord[]) => void): this;
  /** The callback is required (必须); without one this throws. Promise style: pingAsync(). */
  ping(clientIds: string | string[], callback: (online: string[]) => void): this;

  // Promise style: the same requests, resolved with what the callback would get.
  /** Resolves with this object once the session is open (at once if it is). */
  openAsync(): Promise<this>;
  convAsync(options: ConvOptions): Promise<Conversation>;
  convAsync(convId: string): Promise<Conversation | null>;
  roomAsync: RealtimeObject['convAsync'];
  queryAsync(options?: QueryOptions): Promise<ConversationRecord[]>;
  pingAsync(clientIds: string | string[]): Promise<string[]>;
}

export interface Realtime {
  /** Creates a RealtimeObject and starts connecting; returns the object itself (not a thenable). */
  (options: Options, callback?: (realtime: RealtimeObject) => void): RealtimeObject;
  /** SDK version. */
  readonly version: string;
  /** Global settings for all instances (2.x): the WebSocket implementation. */
  config(config: { WebSocket?: WebSocketConstructor }): void;
  /** Escape & < > " ' for HTML. */
  encodeHTML<T>(value: T): T;
  realtime: Realtime;
  default: Realtime;
}

declare const realtime: Realtime;
export default realtime;
export { realtime };
export declare const version: string;
