// Package entry (ESM and CommonJS builds): `import realtime from 'confab-realtime'`.
import realtime from './realtime.js';

export default realtime;
export { realtime };
export { version } from './version.js';
