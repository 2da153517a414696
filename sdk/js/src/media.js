// Message bodies: plain strings, JSON objects, and the `_lctype` rich-media formats
// (protocol §3.4). Pure functions, no I/O.

/** The six built-in rich-media kinds; `_lctype` of TYPES[n] is -(n + 1). */
const TYPES = ['text', 'image', 'audio', 'video', 'location', 'file'];
/** @type {Record<string, string>} */
const ENTITIES = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };

/**
 * Escape `& < > " '` so that a string can be inserted into HTML. Non-strings pass through.
 * @template T
 * @param {T} s
 * @returns {T}
 */
export const encodeHTML = (s) =>
  /** @type {any} */ (typeof s == 'string' ? s.replace(/[&<>"']/g, (c) => ENTITIES[c]) : s);

/**
 * Build the wire body of `send(data, {type})`.
 * data: {text?, attr?, url?, objectId?, metaData?} (location: metaData {longitude, latitude}
 * or data.location).
 * @param {string} type one of TYPES
 * @param {any} data
 * @returns {string}
 */
export const encodeMedia = (type, data) => {
  const n = TYPES.indexOf(type);
  const m = data && data.metaData;
  if (n < 0) throw new TypeError('AV.realtime: unknown message type "' + type + '"; use ' + TYPES.join('|'));
  if (n && n != 4 && !m) throw new TypeError('AV.realtime: a ' + type + ' message needs data.metaData');
  /** @type {any} */
  const o = { _lctype: -n - 1, _lctext: data.text, _lcattrs: data.attr };
  if (n == 4) {
    const l = data.location || m;
    if (!l) throw new TypeError('AV.realtime: a location message needs data.location {longitude, latitude}');
    o._lcloc = { longitude: l.longitude, latitude: l.latitude };
  } else if (n == 5) o._lcfile = { url: data.url, name: m.name, size: m.size };
  else if (n) o._lcfile = { url: data.url, objId: data.objectId, metaData: m };
  return JSON.stringify(o);
};

/**
 * Parse a received body: rich media -> {type, text, attr, url?, metaData?, location?};
 * other JSON objects -> the object; anything else -> the string (HTML-escaped when `html`).
 * @param {any} msg
 * @param {boolean} [html]
 */
export const decodeMedia = (msg, html) => {
  /** @type {any} */
  let o;
  if (typeof msg != 'string') return msg;
  if (/^\{[^]*\}$/.test(msg)) {
    try {
      o = JSON.parse(msg);
    } catch (e) {}
  }
  if (!o) return html ? encodeHTML(msg) : msg;
  const type = TYPES[-o._lctype - 1];
  if (!type) return o;
  const f = o._lcfile || {};
  return {
    type,
    text: html ? encodeHTML(o._lctext) : o._lctext,
    attr: o._lcattrs,
    url: f.url,
    metaData: f.metaData || (f.name != null ? { name: f.name, size: f.size } : undefined),
    location: o._lcloc,
  };
};
