//! `confab check-config`: the effective settings of a valid configuration as TOML (master
//! keys masked), and the bad key of an invalid one, without touching the data directory.
#![allow(clippy::unwrap_used)]

mod common;

use confab_config::{FileConfig, MASKED_KEY, Overrides, resolve};
use std::path::Path;
use std::process::{Command, Output};

const VALID: &str = r#"
listen = "127.0.0.1:7000"
durability = "normal"
read_timeout_secs = 120
trusted_proxies = ["10.0.0.0/8", "::1"]
metrics_token = "scrape-token-secret"

[[apps]]
id = "shop"
key = "shop-key"
master_key = "shop-master-secret"
allowed_origins = ["https://shop.example"]

[apps.signatures]
login = true
window_secs = 60

[apps.limits]
json_depth = 8
sends_per_minute = 120

[[apps]]
id = "blog"
key = "blog-key"
master_key = "blog-master-secret"
"#;

/// Runs `confab check-config` on a file holding `toml` in `dir`, with `args` after it
/// and none of the caller's `CONFAB_*` environment.
fn check(dir: &Path, toml: &str, args: &[&str]) -> Output {
    let file = dir.join("confab.toml");
    std::fs::write(&file, toml).unwrap();
    let mut command = Command::new(common::bin());
    command.arg("check-config").arg(&file).args(args);
    for (name, _) in std::env::vars().filter(|(n, _)| n.starts_with("CONFAB_")) {
        command.env_remove(name);
    }
    command.output().expect("confab runs")
}

#[test]
fn a_valid_file_prints_its_effective_settings_with_masked_keys() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_arg = data.to_str().unwrap();
    let out = check(dir.path(), VALID, &["--listen", "127.0.0.1:0", "--data-dir", data_arg]);
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}\n{stdout}");
    assert!(!stdout.contains("master-secret") && !stderr.contains("master-secret"), "{stdout}");
    assert!(!stdout.contains("scrape-token-secret"), "the metrics token is printed: {stdout}");
    assert!(stdout.contains(&format!("metrics_token = \"{MASKED_KEY}\"")), "{stdout}");
    assert_eq!(stdout.matches(&format!("master_key = \"{MASKED_KEY}\"")).count(), 2, "{stdout}");
    // Every limit is spelled out, defaults included.
    for key in ["frame_bytes = 65536", "json_depth = 8", "sends_per_minute = 120", "window_secs = 900"] {
        assert!(stdout.contains(key), "{key} missing:\n{stdout}");
    }
    // The output is a configuration resolving to the settings `serve` would run with
    // (the flags included), but for the masked keys.
    let printed = resolve(FileConfig::parse(&stdout).expect(&stdout), Overrides::default()).unwrap();
    let overrides = Overrides {
        listen: Some("127.0.0.1:0".into()),
        data_dir: Some(data.clone()),
        ..Overrides::default()
    };
    let expected = resolve(FileConfig::parse(VALID).unwrap(), overrides).unwrap().with_masked_keys();
    assert_eq!(printed, expected, "{stdout}");
    assert!(!data.exists(), "check-config created the data directory");
    // Apps given on the command line replace the file's, and their keys are masked too.
    let out = check(dir.path(), VALID, &["--data-dir", data_arg, "--app", "cli:cli-key:cli-master"]);
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0));
    let printed = resolve(FileConfig::parse(&stdout).unwrap(), Overrides::default()).unwrap();
    assert_eq!(printed.apps.iter().map(|a| a.id.as_str()).collect::<Vec<_>>(), ["cli"]);
    assert!(!stdout.contains("cli-master"), "{stdout}");
    assert!(!data.exists(), "check-config created the data directory");
}

#[test]
fn a_bad_value_exits_1_naming_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let app = "[[apps]]\nid = \"a\"\nkey = \"k\"\nmaster_key = \"m\"\n";
    for (toml, named) in [
        ("durability = \"sometimes\"".to_owned(), "durability"),
        ("trusted_proxies = [\"10.0.0.0/33\"]".to_owned(), "trusted_proxies"),
        ("http_idle_timeout_secs = 0".to_owned(), "http_idle_timeout_secs"),
        ("listen = \"nowhere\"".to_owned(), "listen"),
        ("no_such_setting = 1".to_owned(), "no_such_setting"),
        ("store = \"mysql://db/confab\"".to_owned(), "store"),
        ("store = \"postgres://u@db:notaport/confab\"".to_owned(), "store"),
        (format!("{app}[apps.limits]\njson_depth = 0\n"), "json_depth"),
        (format!("{app}{app}"), "twice"),
    ] {
        let out = check(dir.path(), &toml, &["--data-dir", data.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{toml}: {stderr}");
        assert!(stderr.contains(named), "{toml}: the error does not name {named}: {stderr}");
        assert!(out.stdout.is_empty(), "{toml}: printed settings");
    }
    let out = check(dir.path(), VALID, &["--app", "only-an-id"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--app"));
    assert!(!data.exists(), "check-config created the data directory");
}

/// TLS: the certificate and key paths are printed (they are not secrets), and a pair
/// that is incomplete, missing or not PEM is refused naming the key, from the file, the
/// flags or the environment alike.
#[test]
fn tls_files_are_checked_and_their_paths_printed() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_arg = data.to_str().unwrap();
    let cert = confab_testkit::tls::TestCert::generate(&dir.path().join("certs"), "server");
    let (cert_path, key_path) = (cert.cert.to_str().unwrap(), cert.key.to_str().unwrap());
    let both =
        format!("tls_cert = {cert_path:?}\ntls_key = {key_path:?}\ntls_handshake_timeout_ms = 2500\n{VALID}");
    let out = check(dir.path(), &both, &["--data-dir", data_arg]);
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains(&format!("tls_cert = {cert_path:?}")), "{stdout}");
    assert!(stdout.contains(&format!("tls_key = {key_path:?}")), "{stdout}");
    assert!(stdout.contains("tls_handshake_timeout_ms = 2500"), "{stdout}");
    assert!(!stdout.contains("PRIVATE KEY"), "{stdout}");
    // The flags set TLS on a file without it.
    let out =
        check(dir.path(), VALID, &["--data-dir", data_arg, "--tls-cert", cert_path, "--tls-key", key_path]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8(out.stdout).unwrap().contains(&format!("tls_cert = {cert_path:?}")));

    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not PEM at all\n").unwrap();
    let garbage = garbage.to_str().unwrap();
    let missing = dir.path().join("missing.pem");
    let missing = missing.to_str().unwrap();
    for (args, named) in [
        (vec!["--tls-cert", cert_path], "but tls_key is not"),
        (vec!["--tls-key", key_path], "but tls_cert is not"),
        (vec!["--tls-cert", missing, "--tls-key", key_path], "tls_cert"),
        (vec!["--tls-cert", cert_path, "--tls-key", garbage], "tls_key"),
        (vec!["--tls-cert", garbage, "--tls-key", key_path], "no certificate"),
        (vec!["--tls-cert", key_path, "--tls-key", key_path], "no certificate"),
    ] {
        let mut all = vec!["--data-dir", data_arg];
        all.extend(&args);
        let out = check(dir.path(), VALID, &all);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains(named), "{args:?}: the error does not name {named}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}: printed settings");
    }
    // The environment, as `serve` reads it.
    let with_env = |env: &[(&str, &str)]| {
        let mut command = Command::new(common::bin());
        command.arg("check-config").arg(dir.path().join("confab.toml")).args(["--data-dir", data_arg]);
        for (name, _) in std::env::vars().filter(|(n, _)| n.starts_with("CONFAB_")) {
            command.env_remove(name);
        }
        command.envs(env.iter().copied()).output().expect("confab runs")
    };
    let out = with_env(&[("CONFAB_TLS_CERT", cert_path)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("but tls_key is not"));
    let out = with_env(&[("CONFAB_TLS_CERT", cert_path), ("CONFAB_TLS_KEY", key_path)]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8(out.stdout).unwrap().contains(&format!("tls_key = {key_path:?}")));
    assert!(!data.exists(), "check-config created the data directory");
}
