//! Tenancy: which DriftScans the operator acts on, and what a DriftScan may make it do.
//!
//! Anyone allowed to create a DriftScan in a namespace must not be able to use the operator
//! (or a scan Job) to do what they could not do themselves. The rules, all decided here by
//! pure functions before any Secret is read:
//!
//! - **Namespaces**: the operator acts only on DriftScans in `--scan-namespace` (default: its
//!   own namespace). Others never enter its caches: no Job, no Secret read, no status write,
//!   and the webhook API answers for them as for a missing DriftScan.
//! - **No credentials over plain HTTP**: Git basic auth (`credentials.https`, a GitHub App's
//!   installation token) is never sent to an `http://` URL, and a GitHub App JWT never to an
//!   `http://` `apiUrl`, unless `--allow-insecure-credentials` (a lab) is set.
//! - **Allow-lists**: with `--allowed-git-host`, `source.git.url` must name one of those hosts;
//!   with `--allowed-github-api-url`, a GitHub App's `apiUrl` (default
//!   `https://api.github.com`) must be one of those URLs.
//! - **ServiceAccounts**: `jobTemplate.serviceAccountName` may only name the scan runner's
//!   ServiceAccount (`--scan-service-account`), unless the namespace is one of
//!   `--allow-service-accounts-in`.
//!
//! Caveats: the scan runner checks the same source rules again against the DriftScan it reads
//! (see [`Tenancy::check_source`]), so editing a DriftScan after its Job was created does not
//! escape them.

use std::collections::BTreeSet;

use driftless_crds::drift_scan::{DriftScanSpec, GitCredentialsKind};

/// The GitHub API used when a GitHub App names no `apiUrl`.
pub const DEFAULT_GITHUB_API: &str = "https://api.github.com";

/// The tenancy settings of the operator (its flags), checked against each DriftScan.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tenancy {
    /// Namespaces whose DriftScans the operator acts on.
    pub namespaces: BTreeSet<String>,
    /// Namespaces whose DriftScans may set any `jobTemplate.serviceAccountName`.
    pub service_account_namespaces: BTreeSet<String>,
    /// The scan runner ServiceAccount: the one `jobTemplate.serviceAccountName` may name
    /// elsewhere.
    pub runner_service_account: Option<String>,
    /// Hosts `source.git.url` may name (lower case); empty: any.
    pub git_hosts: BTreeSet<String>,
    /// GitHub API URLs a GitHub App's `apiUrl` may be (without a trailing `/`); empty: any.
    pub github_api_urls: BTreeSet<String>,
    /// Send credentials over plain `http://` too (a lab only).
    pub allow_insecure_credentials: bool,
}

/// The source rules the scan runner checks again (passed to it as flags).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SourceRules {
    /// Hosts `source.git.url` may name (lower case); empty: any.
    pub git_hosts: BTreeSet<String>,
    /// GitHub API URLs a GitHub App's `apiUrl` may be; empty: any.
    pub github_api_urls: BTreeSet<String>,
    /// Send credentials over plain `http://` too.
    pub allow_insecure_credentials: bool,
}

impl Tenancy {
    /// Whether the operator acts on DriftScans of `namespace`.
    pub fn watches(&self, namespace: &str) -> bool {
        self.namespaces.contains(namespace)
    }

    /// The rules on the DriftScan's source, for the scan runner.
    pub fn source_rules(&self) -> SourceRules {
        SourceRules {
            git_hosts: self.git_hosts.clone(),
            github_api_urls: self.github_api_urls.clone(),
            allow_insecure_credentials: self.allow_insecure_credentials,
        }
    }

    /// Every reason the operator must not act on a DriftScan of `namespace` with `spec`
    /// (fetch its repository with its credentials, create its Jobs); `Ok` when it may.
    /// Each message names the field at fault and the operator flag that would allow it.
    pub fn check(&self, namespace: &str, spec: &DriftScanSpec) -> Result<(), String> {
        let mut problems = Vec::new();
        if !self.watches(namespace) {
            problems.push(format!(
                "namespace {namespace:?} is not one of the operator's scan namespaces (--scan-namespace)"
            ));
        }
        problems.extend(self.source_rules().problems(spec));
        if let Some(sa) = &spec.job_template.service_account_name {
            let runner = self.runner_service_account.as_deref();
            if runner != Some(sa.as_str()) && !self.service_account_namespaces.contains(namespace) {
                problems.push(format!(
                    "spec.jobTemplate.serviceAccountName {sa:?}: only {} may be used in namespace {namespace:?} (it is not one of --allow-service-accounts-in)",
                    runner.map_or_else(|| "none".to_owned(), |r| format!("{r:?}"))
                ));
            }
        }
        join(problems)
    }
}

impl SourceRules {
    /// Every reason credentials of `spec` must not be used; `Ok` when they may.
    pub fn check_source(&self, spec: &DriftScanSpec) -> Result<(), String> {
        join(self.problems(spec))
    }

    fn problems(&self, spec: &DriftScanSpec) -> Vec<String> {
        let mut problems = Vec::new();
        let git = &spec.source.git;
        if !self.git_hosts.is_empty() {
            match git_host(&git.url) {
                Some(host) if self.git_hosts.contains(&host) => {}
                host => problems.push(format!(
                    "spec.source.git.url {:?}: host {} is not one of the allowed Git hosts (--allowed-git-host: {})",
                    crate::repo::display_url(&git.url),
                    host.map_or_else(|| "(none)".to_owned(), |h| format!("{h:?}")),
                    list(&self.git_hosts)
                )),
            }
        }
        let Some(creds) = &git.credentials else {
            return problems;
        };
        let basic_auth = matches!(
            creds.kind,
            GitCredentialsKind::Https(_) | GitCredentialsKind::GithubApp(_)
        );
        if basic_auth && is_plain_http(&git.url) && !self.allow_insecure_credentials {
            problems.push(format!(
                "spec.source.git.url {:?}: credentials are never sent over plain http:// (use https://, or --allow-insecure-credentials in a lab)",
                crate::repo::display_url(&git.url)
            ));
        }
        if let GitCredentialsKind::GithubApp(app) = &creds.kind {
            let api = app.api_url.as_deref().unwrap_or(DEFAULT_GITHUB_API);
            let field = "spec.source.git.credentials.githubApp.apiUrl";
            if is_plain_http(api) && !self.allow_insecure_credentials {
                problems.push(format!(
                    "{field} {api:?}: a GitHub App JWT is never sent over plain http:// (use https://, or --allow-insecure-credentials in a lab)"
                ));
            }
            if !self.github_api_urls.is_empty()
                && !self.github_api_urls.contains(normalize_api_url(api))
            {
                problems.push(format!(
                    "{field} {api:?} is not one of the allowed GitHub API URLs (--allowed-github-api-url: {})",
                    list(&self.github_api_urls)
                ));
            }
        }
        problems
    }
}

fn join(problems: Vec<String>) -> Result<(), String> {
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

fn list(set: &BTreeSet<String>) -> String {
    set.iter().cloned().collect::<Vec<_>>().join(", ")
}

/// Whether `url` uses plain `http://` (any case).
pub fn is_plain_http(url: &str) -> bool {
    url.trim_start()
        .get(..7)
        .is_some_and(|s| s.eq_ignore_ascii_case("http://"))
}

/// A GitHub API URL as compared with the allow-list: without trailing `/`.
pub fn normalize_api_url(url: &str) -> &str {
    url.trim().trim_end_matches('/')
}

/// The host a Git URL names, lower case, without user or port: `https://u@Host:8443/x` →
/// `host`, `git@github.com:org/repo` → `github.com`, `[::1]` for IPv6. `None` for a local
/// path or `file://` URL.
pub fn git_host(url: &str) -> Option<String> {
    let url = url.trim();
    let authority = if let Some((scheme, rest)) = url.split_once("://") {
        if scheme.eq_ignore_ascii_case("file") {
            return None;
        }
        rest.split(['/', '?', '#']).next().unwrap_or("")
    } else {
        // scp-like `user@host:path`; a path without `:` before any `/` is local.
        let (head, _) = url.split_once(':')?;
        if head.contains('/') {
            return None;
        }
        head
    };
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(rest) = host_port.strip_prefix('[') {
        format!("[{}]", rest.split(']').next().unwrap_or(""))
    } else {
        host_port.split(':').next().unwrap_or("").to_owned()
    };
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use driftless_crds::drift_scan::DriftScanSpec;
    use serde_json::json;

    use super::*;

    fn spec(git: serde_json::Value) -> DriftScanSpec {
        let mut git = git;
        git["stacks"] = json!(["live"]);
        serde_json::from_value(json!({"source": {"git": git}})).unwrap()
    }

    fn https(url: &str) -> DriftScanSpec {
        spec(json!({"url": url, "credentials": {"https": {"name": "other"}}}))
    }

    fn app(url: &str, api: Option<&str>) -> DriftScanSpec {
        let mut app = json!({"secretRef": {"name": "app"}, "appId": 1, "installationId": 2});
        if let Some(api) = api {
            app["apiUrl"] = json!(api);
        }
        spec(json!({"url": url, "credentials": {"githubApp": app}}))
    }

    fn tenancy() -> Tenancy {
        Tenancy {
            namespaces: ["team-a".to_owned()].into(),
            runner_service_account: Some("driftless-scan-runner".into()),
            ..Tenancy::default()
        }
    }

    #[test]
    fn only_listed_namespaces_are_acted_on() {
        let t = tenancy();
        assert!(t.watches("team-a"));
        assert!(!t.watches("team-b"));
        let err = t
            .check("team-b", &spec(json!({"url": "https://h/r"})))
            .unwrap_err();
        assert!(
            err.contains("namespace \"team-b\" is not one of the operator's scan namespaces"),
            "{err}"
        );
        t.check("team-a", &spec(json!({"url": "https://h/r"})))
            .unwrap();
    }

    #[test]
    fn basic_auth_is_never_sent_over_plain_http() {
        let t = tenancy();
        let err = t
            .check("team-a", &https("http://127.0.0.1:18999/repo.git"))
            .unwrap_err();
        assert!(
            err.contains("spec.source.git.url \"http://127.0.0.1:18999/repo.git\": credentials are never sent over plain http://"),
            "{err}"
        );
        assert!(t.check("team-a", &https("HTTP://h/repo.git")).is_err());
        t.check("team-a", &https("https://h/repo.git")).unwrap();
        // No credentials: nothing to leak.
        t.check("team-a", &spec(json!({"url": "http://h/repo.git"})))
            .unwrap();
        // An SSH key is not sent to an http:// URL.
        t.check(
            "team-a",
            &spec(json!({"url": "http://h/r", "credentials": {"ssh": {"name": "k"}}})),
        )
        .unwrap();
        let lab = Tenancy {
            allow_insecure_credentials: true,
            ..tenancy()
        };
        lab.check("team-a", &https("http://127.0.0.1:18999/repo.git"))
            .unwrap();
    }

    #[test]
    fn github_app_jwt_and_token_need_https() {
        let t = tenancy();
        let err = t
            .check("team-a", &app("https://h/r", Some("http://evil:8080/api")))
            .unwrap_err();
        assert!(
            err.contains("spec.source.git.credentials.githubApp.apiUrl \"http://evil:8080/api\": a GitHub App JWT is never sent over plain http://"),
            "{err}"
        );
        let err = t.check("team-a", &app("http://h/r", None)).unwrap_err();
        assert!(err.contains("spec.source.git.url"), "{err}");
        t.check("team-a", &app("https://h/r", None)).unwrap();
    }

    #[test]
    fn allow_lists_refuse_other_hosts_and_api_urls() {
        let t = Tenancy {
            git_hosts: ["github.com".to_owned()].into(),
            github_api_urls: ["https://ghe.example.com/api/v3".to_owned()].into(),
            ..tenancy()
        };
        t.check("team-a", &https("https://GitHub.com/org/repo.git"))
            .unwrap();
        t.check(
            "team-a",
            &spec(json!({"url": "git@github.com:org/repo.git"})),
        )
        .unwrap();
        let err = t
            .check("team-a", &https("https://user:pw@evil.example:443/x"))
            .unwrap_err();
        assert!(
            err.contains("spec.source.git.url \"https://evil.example:443/x\": host \"evil.example\" is not one of the allowed Git hosts (--allowed-git-host: github.com)"),
            "{err}"
        );
        assert!(!err.contains("pw"), "{err}");
        let err = t
            .check("team-a", &spec(json!({"url": "file:///etc"})))
            .unwrap_err();
        assert!(err.contains("host (none)"), "{err}");
        // The default apiUrl is not on this list.
        let err = t
            .check("team-a", &app("https://github.com/o/r", None))
            .unwrap_err();
        assert!(
            err.contains(
                "apiUrl \"https://api.github.com\" is not one of the allowed GitHub API URLs"
            ),
            "{err}"
        );
        t.check(
            "team-a",
            &app(
                "https://github.com/o/r",
                Some("https://ghe.example.com/api/v3/"),
            ),
        )
        .unwrap();
    }

    #[test]
    fn service_account_is_the_runners_unless_the_namespace_opts_in() {
        let mut s = spec(json!({"url": "https://h/r"}));
        s.job_template.service_account_name = Some("deployer".into());
        let t = tenancy();
        let err = t.check("team-a", &s).unwrap_err();
        assert!(
            err.contains("spec.jobTemplate.serviceAccountName \"deployer\": only \"driftless-scan-runner\" may be used in namespace \"team-a\""),
            "{err}"
        );
        s.job_template.service_account_name = Some("driftless-scan-runner".into());
        t.check("team-a", &s).unwrap();
        s.job_template.service_account_name = Some("deployer".into());
        let open = Tenancy {
            service_account_namespaces: ["team-a".to_owned()].into(),
            ..tenancy()
        };
        open.check("team-a", &s).unwrap();
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let mut s = app("http://h/r", Some("http://h/api"));
        s.job_template.service_account_name = Some("admin".into());
        let err = tenancy().check("team-b", &s).unwrap_err();
        assert_eq!(err.split("; ").count(), 4, "{err}");
    }

    #[test]
    fn hosts_of_git_urls() {
        for (url, host) in [
            ("https://github.com/o/r.git", Some("github.com")),
            ("http://127.0.0.1:18999/repo.git", Some("127.0.0.1")),
            (
                "ssh://git@Git.Example.com:2222/o/r",
                Some("git.example.com"),
            ),
            ("git@github.com:o/r.git", Some("github.com")),
            ("https://u:p@[::1]:8443/r", Some("[::1]")),
            ("file:///srv/repo", None),
            ("/srv/repo", None),
            ("./a:b/c", None),
        ] {
            assert_eq!(git_host(url).as_deref(), host, "{url}");
        }
    }
}
