// Kept equal to package.json "version" (scripts/build.mjs checks it).
export const version = '2.5.0';
