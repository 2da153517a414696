// Type declarations for confab-realtime: the leancloud-realtime 2.x `AV.realtime` API.
// Every request method returns the object it was called on (for 2.x-style chaining), which is
// also a Promise of the request's result: `Chain<This, Result>`.

/** The object a method was called on, which is also a Promise of the request's result. */
export type Chain<T, R> = T & Promise<R>;

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
  add(clientIds: string | string[], callback?: (reply: Frame) => void): Chain<Conversation, Frame>;
  remove(clientIds: string | string[], callback?: (reply: Frame) => void): Chain<Conversation, Frame>;
  join(callback?: (reply: Frame) => void): Chain<Conversation, Frame>;
  leave(callback?: (reply: Frame) => void): Chain<Conversation, Frame>;
  send(data: string | object, callback?: (ack: Ack) => void): Chain<Conversation, Ack>;
  send(data: string | object, options: SendOptions & { transient: true }, callback?: () => void): Chain<Conversation, void>;
  send(data: string | object, options: SendOptions, callback?: (ack: Ack) => void): Chain<Conversation, Ack>;
  log(callback?: (logs: LogItem[]) => void): Chain<Conversation, LogItem[]>;
  log(options: LogOptions, callback?: (logs: LogItem[]) => void): Chain<Conversation, LogItem[]>;
  receive(callback: (message: Message) => void): Conversation;
  receipt(callback: (receipt: Receipt) => void): Conversation;
  list(callback?: (members: string[]) => void): Chain<Conversation, string[]>;
  count(callback?: (count: number) => void): Chain<Conversation, number>;
  update(data: { name?: string; attr?: any; [key: string]: any }, callback?: (reply: Frame) => void): Chain<Conversation, Frame>;
  ping(clientIds: string | string[], callback?: (online: string[]) => void): Chain<Conversation, string[]>;
}

export type Room = Conversation;

export interface RealtimeObject {
  clientId: string;
  open(callback?: (realtime: RealtimeObject) => void): Chain<RealtimeObject, RealtimeObject>;
  close(): RealtimeObject;
  /** Built-in events get typed data; any other name is a custom event (see emit). */
  on<K extends string>(event: K, callback: (data: EventData<K>) => void): RealtimeObject;
  once<K extends string>(event: K, callback: (data: EventData<K>) => void): RealtimeObject;
  off(event: string, callback?: (data?: any) => void): RealtimeObject;
  emit(event: string, data?: any): RealtimeObject;
  conv(options: ConvOptions, callback?: (conversation: Conversation) => void): Chain<Conversation, Conversation>;
  conv(callback: (conversation: Conversation) => void): Chain<Conversation, Conversation>;
  conv(convId: string, callback?: (conversation: Conversation | null) => void): Chain<Conversation, Conversation | null>;
  room: RealtimeObject['conv'];
  query(callback?: (results: ConversationRecord[]) => void): Chain<RealtimeObject, ConversationRecord[]>;
  query(options: QueryOptions, callback?: (results: ConversationRecord[]) => void): Chain<RealtimeObject, ConversationRecord[]>;
  ping(clientIds: string | string[], callback?: (online: string[]) => void): Chain<RealtimeObject, string[]>;
}

export interface Realtime {
  (options: Options, callback?: (realtime: RealtimeObject) => void): Chain<RealtimeObject, RealtimeObject>;
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
