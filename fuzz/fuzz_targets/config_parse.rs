//! The server's configuration on arbitrary text: `confab.toml` parsing and resolution
//! into settings (with and without command-line overrides) never panic; bad input is an
//! error.
#![no_main]

use confab_config::{FileConfig, Overrides, resolve};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(file) = FileConfig::parse(text) {
        let _ = resolve(file.clone(), Overrides::default());
        // The same text as `--app`/`--listen` values, which take the place of the file's.
        let overrides = Overrides {
            listen: Some(text.to_owned()),
            apps: text.lines().map(str::to_owned).collect(),
            ..Overrides::default()
        };
        let _ = resolve(file, overrides);
    }
});
