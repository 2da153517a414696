//! Message files on LeanCloud's file domains: which URLs they are, where `pull --files`
//! keeps them (`DIR/files/<host>/<path>`), and how `import --file-base-url` rewrites
//! them to where the operator re-hosts that directory. One mapping serves both, so an
//! import needs no manifest of what was downloaded.

use serde_json::Value;

/// Domains LeanCloud served files from (suffixes): the `*.lcfile.com` file domains, the
/// Qiniu `*.clouddn.com` buckets of older apps and LeanCloud's own API domains. An app
/// with its own bound file domain adds it with `--file-domain`.
pub const LEANCLOUD_FILE_DOMAINS: &[&str] = &[
    "lcfile.com",
    "clouddn.com",
    "leancloud.cn",
    "lncld.net",
    "lncldapi.com",
    "lncldglobal.com",
    "avoscloud.com",
];

/// Longest URL path kept (longer ones are left alone).
const MAX_PATH: usize = 1024;

/// The file domains in force.
#[derive(Debug, Clone)]
pub struct FileDomains(Vec<String>);

impl FileDomains {
    /// LeanCloud's domains plus `extra` (host names; a leading `*.` or `.` is ignored).
    pub fn new(extra: &[String]) -> FileDomains {
        let mut domains: Vec<String> = LEANCLOUD_FILE_DOMAINS.iter().map(|d| (*d).to_owned()).collect();
        domains.extend(
            extra
                .iter()
                .map(|d| d.trim().trim_start_matches("*.").trim_start_matches('.').to_ascii_lowercase()),
        );
        domains.retain(|d| !d.is_empty());
        FileDomains(domains)
    }

    fn matches(&self, host: &str) -> bool {
        self.0.iter().any(|d| host == d || host.strip_suffix(d.as_str()).is_some_and(|p| p.ends_with('.')))
    }
}

/// A file URL split into the parts the mapping uses.
#[derive(Debug, PartialEq)]
struct FileUrl<'a> {
    /// Host (lower case) with `_PORT` when a port was given.
    host_dir: String,
    /// The path without its leading `/`.
    path: &'a str,
    /// `?…` (with the `?`), or empty.
    query: &'a str,
}

fn split<'u>(url: &'u str, domains: &FileDomains) -> Option<FileUrl<'u>> {
    let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"))?;
    let rest = rest.split('#').next().unwrap_or(rest);
    let (authority, tail) = rest.split_at(rest.find('/')?);
    let (path, query) = match tail.find('?') {
        Some(i) => (&tail[1..i], &tail[i..]),
        None => (&tail[1..], ""),
    };
    if authority.contains('@') || path.is_empty() || path.len() > MAX_PATH {
        return None;
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => (h, Some(p)),
        _ => (authority, None),
    };
    let host = host.to_ascii_lowercase();
    let host_ok =
        !host.is_empty() && host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
    if !host_ok || !domains.matches(&host) {
        return None;
    }
    // Every segment a plain file name: no empty, `.` or `..` segment, nothing that a
    // file system or a shell reads specially.
    let clean = path.split('/').all(|s| {
        !s.is_empty()
            && s != "."
            && s != ".."
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-~%+=@,".contains(&b))
    });
    if !clean {
        return None;
    }
    let host_dir = match port {
        Some(p) => format!("{host}_{p}"),
        None => host,
    };
    Some(FileUrl { host_dir, path, query })
}

/// Where a file at `url` is kept under `DIR/files/` (a relative path of plain segments),
/// or `None` if the URL is not on a file domain or its path is not plain.
pub fn local_path(url: &str, domains: &FileDomains) -> Option<String> {
    split(url, domains).map(|u| format!("{}/{}", u.host_dir, u.path))
}

/// `url` as re-hosted under `base` (e.g. `https://files.example.com/lc`).
pub fn rehosted(url: &str, domains: &FileDomains, base: &str) -> Option<String> {
    let u = split(url, domains)?;
    Some(format!("{}/{}/{}{}", base.trim_end_matches('/'), u.host_dir, u.path, u.query))
}

/// The file URL of a rich-media message body (`_lcfile.url`), if it has one.
pub fn file_url(data: &str) -> Option<String> {
    if !data.trim_start().starts_with('{') || !data.contains("_lcfile") {
        return None;
    }
    let body: Value = serde_json::from_str(data).ok()?;
    body.get("_lcfile")?.get("url")?.as_str().map(str::to_owned)
}

/// The body with its `_lcfile.url` re-hosted under `base`, or `None` when it has no
/// file URL on a file domain. The body's text is otherwise kept as it was.
pub fn rewrite_body(data: &str, domains: &FileDomains, base: &str) -> Option<String> {
    let url = file_url(data)?;
    let new = rehosted(&url, domains, base)?;
    let (old_json, new_json) = (Value::from(url.as_str()).to_string(), Value::from(new.as_str()).to_string());
    if data.contains(&old_json) {
        return Some(data.replacen(&old_json, &new_json, 1));
    }
    // The URL was written with other escapes (`\/`): rewrite the parsed body.
    let mut body: Value = serde_json::from_str(data).ok()?;
    body.get_mut("_lcfile")?.as_object_mut()?.insert("url".into(), Value::from(new));
    Some(body.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_domain_urls_map_to_plain_paths() {
        let d = FileDomains::new(&["files.example.com".into(), "*.cdn.example.org".into()]);
        assert_eq!(
            local_path("https://lc-abc.cn-n1.lcfile.com/a1B2/photo.jpg?imageView2/2/w/100", &d).as_deref(),
            Some("lc-abc.cn-n1.lcfile.com/a1B2/photo.jpg")
        );
        assert_eq!(
            local_path("http://ac-xyz.clouddn.com/k.png", &d).as_deref(),
            Some("ac-xyz.clouddn.com/k.png")
        );
        assert_eq!(
            local_path("https://files.example.com:8443/x", &d).as_deref(),
            Some("files.example.com_8443/x")
        );
        assert_eq!(local_path("https://a.cdn.example.org/x", &d).as_deref(), Some("a.cdn.example.org/x"));
        for bad in [
            "https://evil.com/x",
            "https://notlcfile.com/x",
            "https://lcfile.com.evil.com/x",
            "ftp://x.lcfile.com/a",
            "https://x.lcfile.com/../etc/passwd",
            "https://x.lcfile.com/a//b",
            "https://x.lcfile.com/",
            "https://user@x.lcfile.com/a",
            "https://x.lcfile.com/a b",
        ] {
            assert_eq!(local_path(bad, &d), None, "{bad}");
        }
        assert_eq!(
            rehosted("https://x.lcfile.com/a/b.png?v=1", &d, "https://cdn.example.com/lc/").as_deref(),
            Some("https://cdn.example.com/lc/x.lcfile.com/a/b.png?v=1")
        );
    }

    #[test]
    fn bodies_are_rewritten_in_place() {
        let d = FileDomains::new(&[]);
        let body =
            r#"{"_lctype":-2,"_lcfile":{"url":"https://x.lcfile.com/p.png","objId":"o"},"_lctext":"hi"}"#;
        assert_eq!(
            rewrite_body(body, &d, "https://c.example").as_deref(),
            Some(
                r#"{"_lctype":-2,"_lcfile":{"url":"https://c.example/x.lcfile.com/p.png","objId":"o"},"_lctext":"hi"}"#
            )
        );
        let escaped = r#"{"_lcfile":{"url":"https:\/\/x.lcfile.com\/p.png"}}"#;
        let out = rewrite_body(escaped, &d, "https://c.example").unwrap_or_default();
        assert!(out.contains("https://c.example/x.lcfile.com/p.png"), "{out}");
        assert_eq!(rewrite_body(r#"{"_lcfile":{"url":"https://elsewhere.com/p"}}"#, &d, "https://c"), None);
        assert_eq!(rewrite_body("plain text", &d, "https://c"), None);
    }
}
