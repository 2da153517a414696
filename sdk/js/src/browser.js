// <script> entry: exposes the global `AV.realtime` without clobbering an existing `AV`
// (for example LeanCloud's storage SDK, which also lives in `AV`).
import realtime from './realtime.js';

const g = /** @type {any} */ (globalThis);
(g.AV = g.AV || {}).realtime = realtime;
