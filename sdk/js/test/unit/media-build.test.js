// Rich-media codec (protocol §3.4) and the three built files.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { readFileSync } from 'node:fs';
import vm from 'node:vm';
import { encodeMedia, decodeMedia, encodeHTML } from '../../src/media.js';

describe('media', () => {
  it('round-trips every built-in type', () => {
    const cases = [
      ['text', { text: 't', attr: { a: 1 } }, { type: 'text', text: 't', attr: { a: 1 } }],
      ['image', { url: 'u', objectId: 'o', metaData: { width: 1 } }, { type: 'image', url: 'u', metaData: { width: 1 } }],
      ['audio', { url: 'u', metaData: { duration: 2 } }, { type: 'audio', url: 'u', metaData: { duration: 2 } }],
      ['video', { url: 'u', metaData: { duration: 3 } }, { type: 'video', url: 'u', metaData: { duration: 3 } }],
      ['location', { location: { longitude: 1, latitude: 2 } }, { type: 'location', location: { longitude: 1, latitude: 2 } }],
      ['file', { url: 'u', metaData: { name: 'f', size: 4 } }, { type: 'file', url: 'u', metaData: { name: 'f', size: 4 } }],
    ];
    for (const [type, data, want] of cases) {
      const wire = encodeMedia(type, data);
      assert.equal(typeof wire, 'string');
      const got = decodeMedia(wire);
      for (const k of Object.keys(got)) if (got[k] === undefined) delete got[k];
      assert.deepEqual(got, want, type);
    }
  });

  it('decodes what other SDKs send', () => {
    assert.equal(decodeMedia('hello'), 'hello');
    assert.equal(decodeMedia('{not json}'), '{not json}');
    assert.deepEqual(decodeMedia('{"a":1}'), { a: 1 });
    assert.deepEqual(decodeMedia('{"_lctype":3,"x":1}'), { _lctype: 3, x: 1 }, 'app-defined types stay raw');
    assert.deepEqual(decodeMedia('{"_lctype":-127}'), { _lctype: -127 });
    assert.equal(decodeMedia('<i>', true), '&lt;i&gt;');
    assert.equal(encodeHTML(5), 5);
  });
});

describe('builds', () => {
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8'));

  it('CommonJS: require() returns the function itself', () => {
    const r = createRequire(import.meta.url)('../../dist/confab-realtime.cjs');
    assert.equal(typeof r, 'function');
    assert.equal(r.realtime, r);
    assert.equal(r.version, pkg.version);
  });

  it('ESM: default and named exports', async () => {
    const m = await import('../../dist/confab-realtime.mjs');
    assert.equal(m.default, m.realtime);
    assert.equal(m.version, pkg.version);
  });

  it('<script>: defines AV.realtime and keeps an existing AV', () => {
    const code = readFileSync(new URL('../../dist/AV.realtime.js', import.meta.url), 'utf8');
    const ctx = vm.createContext({ AV: { Object: 'storage sdk' } });
    vm.runInContext(code, ctx);
    assert.equal(ctx.AV.Object, 'storage sdk');
    assert.equal(typeof ctx.AV.realtime, 'function');
    assert.equal(ctx.AV.realtime.version, pkg.version);
    const fresh = vm.createContext({});
    vm.runInContext(code, fresh);
    assert.equal(typeof fresh.AV.realtime, 'function');
    assert.throws(() => fresh.AV.realtime({ appId: 'a', clientId: 'b', server: 'ws://x' }), /WebSocket/);
  });
});
