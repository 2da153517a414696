// For pages that load dist/AV.realtime.js with a <script> tag: the global AV.realtime.
import type { Realtime } from './index.js';

declare global {
  var AV: { realtime: Realtime; [key: string]: any };
}
export {};
