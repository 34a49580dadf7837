//! Tests of the pure decisions over a commit's files, and of the cache against real git
//! repositories (made with the git CLI) served over `file://` and `git daemon`.

use std::path::Path;
use std::process::Command;

use super::*;

fn snap(files: &[(&str, &str)]) -> Snapshot {
    Snapshot::from_files(files.iter().copied())
}

const TF: Engine = Engine::Terraform;

#[test]
fn discover_matches_whole_paths_of_stack_directories() {
    let s = snap(&[
        ("main.tf", ""),
        ("live/a/main.tf", ""),
        ("live/b/x.tf.json", "{}"),
        ("live/b/deep/main.tf", ""),
        ("live/c/README.md", ""),
        ("live/.terraform/modules/m/main.tf", ""),
        (".github/x/main.tf", ""),
        ("tg/x/terragrunt.hcl", ""),
        ("tg/y/other.hcl", ""),
    ]);
    let d = |globs: &[&str], engine| {
        let globs: Vec<String> = globs.iter().map(|g| g.to_string()).collect();
        discover(&s, &[], &globs, engine).unwrap()
    };
    assert_eq!(d(&["live/*"], TF), ["live/a", "live/b"]);
    assert_eq!(d(&["live/**"], TF), ["live/a", "live/b", "live/b/deep"]);
    assert_eq!(d(&["live/*/"], TF), ["live/a", "live/b"]);
    assert_eq!(d(&["."], TF), ["."]);
    assert_eq!(d(&["**"], Engine::Terragrunt), ["tg/x"]);
    assert_eq!(d(&["nothing/**"], TF), Vec::<String>::new());
    // Explicit stacks are kept (even when absent: the runner reports them), deduplicated.
    let got = discover(
        &s,
        &["live/a/".into(), "extra".into()],
        &["live/*".into()],
        TF,
    )
    .unwrap();
    assert_eq!(got, ["extra", "live/a", "live/b"]);
    let err = discover(&s, &[], &["live/*".into(), "live/[".into()], TF).unwrap_err();
    assert!(
        err.starts_with("spec.source.git.discover[1]: \"live/[\" is not a glob"),
        "{err}"
    );
}

#[test]
fn versions_follow_pins_then_required_version_then_default() {
    let s = snap(&[
        (".terraform-version", "1.6.6\n"),
        ("live/a/main.tf", ""),
        ("live/b/.terraform-version", "v1.5.7\n"),
        ("live/b/main.tf", ""),
        (
            "other/c/main.tf",
            "terraform {\n  required_version = \"~> 1.4.0\"\n}\n",
        ),
        ("tg/.terragrunt-version", "0.55.1"),
        ("tg/x/terragrunt.hcl", ""),
        ("tg/y/main.tf", ""),
    ]);
    // The nearest pin wins; the root pin covers the rest.
    assert_eq!(stack_version(&s, "live/b", "1.0.3"), "1.5.7");
    assert_eq!(stack_version(&s, "live/a", "1.0.3"), "1.6.6");
    // A Terragrunt stack uses .terragrunt-version; a plain one next to it does not.
    assert_eq!(stack_version(&s, "tg/x", "1.0.3"), "0.55.1");
    assert_eq!(stack_version(&s, "tg/y", "1.0.3"), "1.6.6");
    assert_eq!(stack_version(&s, ".", "1.0.3"), "1.6.6");

    let no_pin = |files: &[(&str, &str)], default: &str| stack_version(&snap(files), "s", default);
    let req = |c: &str| format!("terraform {{\n  required_version = \"{c}\"\n}}\n");
    assert_eq!(no_pin(&[("s/v.tf", &req("~> 1.4.0"))], "1.0.3"), "1.4");
    assert_eq!(no_pin(&[("s/v.tf", &req("~> 1.4.0"))], "1.4.2"), "1.4.2");
    assert_eq!(
        no_pin(&[("s/v.tf", &req(">= 1.3, < 2.0"))], "1.9.8"),
        "1.9.8"
    );
    assert_eq!(no_pin(&[("s/v.tf", &req(">= 1.3, < 2.0"))], "1.0.3"), "1.3");
    assert_eq!(no_pin(&[("s/v.tf", &req("1.2.9"))], "1.0.3"), "1.2.9");
    assert_eq!(no_pin(&[("s/v.tf", &req("= 1.2.9"))], "1.0.3"), "1.2.9");
    assert_eq!(no_pin(&[("s/v.tf", &req("< 1.0"))], "1.0.3"), "1.0.3");
    assert_eq!(no_pin(&[("s/v.tf", &req("garbage"))], "1.0.3"), "1.0.3");
    assert_eq!(no_pin(&[("s/main.tf", "")], "1.0.3"), "1.0.3");
    // Commented out: ignored, whatever the comment style.
    for commented in [
        "# required_version = \"1.2.0\"\n",
        "// required_version = \"1.2.0\"\n",
        "/* required_version = \"1.2.0\" */\n",
        "/*\n terraform {\n  required_version = \"1.2.0\"\n}\n*/\n",
    ] {
        assert_eq!(
            no_pin(&[("s/v.tf", commented)], "1.0.3"),
            "1.0.3",
            "{commented}"
        );
    }
    // JSON syntax.
    assert_eq!(
        no_pin(
            &[(
                "s/v.tf.json",
                r#"{"terraform": {"required_version": "1.3.1"}}"#
            )],
            "1.0.3"
        ),
        "1.3.1"
    );
    // Only the stack's own files count, not a module's or a sibling's.
    assert_eq!(
        no_pin(&[("s/main.tf", ""), ("s/mod/v.tf", &req("1.2.0"))], "1.0.3"),
        "1.0.3"
    );
    // .opentofu-version after .terraform-version.
    assert_eq!(
        no_pin(
            &[("s/.opentofu-version", "1.8.0"), ("s/main.tf", "")],
            "1.0.3"
        ),
        "1.8.0"
    );
    assert_eq!(
        no_pin(
            &[
                ("s/.opentofu-version", "1.8.0"),
                (".terraform-version", "1.5.0"),
                ("s/main.tf", "")
            ],
            "1.0.3"
        ),
        "1.5.0"
    );
}

#[test]
fn unusable_pins_fall_through() {
    for bad in [
        "",
        "\n1.5.0",
        "min-required",
        "latest-allowed",
        "latest:^1.5",
        "1.5.0; rm -rf /",
        "1.5.0 extra",
        "../../etc",
        "-1",
        &"9".repeat(129),
    ] {
        assert_eq!(pin_version(bad), None, "{bad:?}");
        let s = snap(&[("s/.terraform-version", bad), ("s/main.tf", "")]);
        assert_eq!(stack_version(&s, "s", "1.0.3"), "1.0.3", "{bad:?}");
    }
    assert_eq!(pin_version("v1.5.7\r\n").as_deref(), Some("1.5.7"));
    assert_eq!(
        pin_version("  1.9.0-beta1 ").as_deref(),
        Some("1.9.0-beta1")
    );
    assert_eq!(pin_version("latest").as_deref(), Some("latest"));
    // A pin under a hidden directory is not the stack's.
    let s = snap(&[(".x/.terraform-version", "1.2.3"), ("s/main.tf", "")]);
    assert_eq!(stack_version(&s, "s", "1.0.3"), "1.0.3");
}

#[test]
fn images_render_the_template() {
    let s = snap(&[
        ("a/.terraform-version", "1.5.7"),
        ("a/main.tf", ""),
        ("b/main.tf", ""),
    ]);
    assert_eq!(
        stack_image(&s, "a", "hashicorp/terraform:{{ version }}", "1.0.3"),
        "hashicorp/terraform:1.5.7"
    );
    assert_eq!(
        stack_image(&s, "b", "hashicorp/terraform:{{version}}", "1.0.3"),
        "hashicorp/terraform:1.0.3"
    );
    assert_eq!(stack_image(&s, "a", "fixed:1", "1.0.3"), "fixed:1");
}

#[test]
fn local_sources_of_modules_and_terragrunt() {
    let tf = r#"
module "net" {
  source = "../../modules/net"
}
module "remote" {
  source  = "terraform-aws-modules/vpc/aws"
  version = "5.0.0"
}
# module "old" { source = "../../modules/old" }
module "here" { source = "./sub" }
"#;
    assert_eq!(local_sources(tf), ["../../modules/net", "./sub"]);
    let tg = r#"terraform {
  source = "../../modules//vpc?ref=v1"
}
include "root" { path = find_in_parent_folders() }
"#;
    assert_eq!(local_sources(tg), ["../../modules"]);
    let json = r#"{"module": {"x": {"source": "../m"}}}"#;
    assert_eq!(local_sources(json), ["../m"]);
    assert!(local_sources(r#"resource "x" "y" { data_source = "../no" }"#).is_empty());
}

#[test]
fn module_graph_follows_local_modules_inside_the_repository() {
    let s = snap(&[
        (
            "live/a/main.tf",
            "module \"n\" {\n  source = \"../../modules/net\"\n}\n",
        ),
        (
            "live/b/main.tf",
            "module \"a\" {\n  source = \"../../modules/app\"\n}\n",
        ),
        (
            "live/c/main.tf",
            "module \"out\" {\n  source = \"../../../../outside\"\n}\n",
        ),
        (
            "modules/app/main.tf",
            "module \"n\" {\n  source = \"../net\"\n}\n",
        ),
        ("modules/net/main.tf", ""),
        (
            "tg/x/terragrunt.hcl",
            "terraform {\n  source = \"../../modules//app\"\n}\n",
        ),
    ]);
    let stacks: Vec<String> = ["live/a", "live/b", "live/c", "tg/x"]
        .map(String::from)
        .to_vec();
    let g = module_graph(&s, &stacks);
    assert_eq!(g["live/a"], ["modules/net"]);
    assert_eq!(g["live/b"], ["modules/app"]);
    assert_eq!(g["modules/app"], ["modules/net"]);
    assert!(
        g["live/c"].is_empty(),
        "a source leaving the repository is dropped"
    );
    assert_eq!(g["tg/x"], ["modules"]);
    // Used with the webhook's selection.
    let hit = |files: &[&str]| {
        let files: Vec<String> = files.iter().map(|f| f.to_string()).collect();
        crate::scan::webhook::affected_stacks(&stacks, &files, &g)
    };
    assert_eq!(
        hit(&["modules/net/variables.tf"]),
        ["live/a", "live/b", "tg/x"]
    );
    assert_eq!(hit(&["modules/app/x.tf"]), ["live/b", "tg/x"]);
    assert_eq!(hit(&["modules/other/x.tf"]), ["tg/x"]);
    assert!(hit(&["docs/README.md"]).is_empty());
}

#[test]
fn urls_are_shown_without_credentials() {
    assert_eq!(
        display_url("https://user:s3cret@example.com/org/repo.git"),
        "https://example.com/org/repo.git"
    );
    assert_eq!(
        display_url("https://x-access-token:ghs_abc@github.com/o/r"),
        "https://github.com/o/r"
    );
    assert_eq!(
        display_url("ssh://git@example.com:2222/r.git"),
        "ssh://git@example.com:2222/r.git"
    );
    assert_eq!(
        display_url("git@github.com:o/r.git"),
        "git@github.com:o/r.git"
    );
    assert_eq!(display_url("file:///srv/repo"), "file:///srv/repo");
}

// ---- real repositories ---------------------------------------------------------------------

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn write(root: &Path, path: &str, text: &str) {
    let p = root.join(path);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

/// A repository with two commits on `main` (tagged `v1` at the first) and one on `other`.
struct Repo {
    _dir: tempfile::TempDir,
    path: PathBuf,
    first: String,
    second: String,
    other: String,
}

fn repo() -> Repo {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("infra");
    std::fs::create_dir_all(&path).unwrap();
    git(&path, &["init", "-q", "-b", "main"]);
    write(
        &path,
        "live/a/main.tf",
        "module \"n\" {\n  source = \"../../modules/net\"\n}\n",
    );
    write(&path, "live/a/.terraform-version", "1.5.7\n");
    write(
        &path,
        "live/b/main.tf",
        "terraform {\n  required_version = \"1.0.3\"\n}\n",
    );
    write(&path, "modules/net/main.tf", "");
    git(&path, &["add", "-A"]);
    git(&path, &["commit", "-q", "-m", "one"]);
    let first = git(&path, &["rev-parse", "HEAD"]);
    git(&path, &["tag", "v1"]);
    // Second commit: a new stack, and live/a moves to another version.
    write(&path, "live/c/main.tf", "");
    write(&path, "live/a/.terraform-version", "1.6.0\n");
    git(&path, &["add", "-A"]);
    git(&path, &["commit", "-q", "-m", "two"]);
    let second = git(&path, &["rev-parse", "HEAD"]);
    git(&path, &["checkout", "-q", "-b", "other", &first]);
    write(&path, "live/d/main.tf", "");
    git(&path, &["add", "-A"]);
    git(&path, &["commit", "-q", "-m", "other"]);
    let other = git(&path, &["rev-parse", "HEAD"]);
    git(&path, &["checkout", "-q", "main"]);
    // Uncommitted work-tree changes must never be seen.
    write(&path, "live/zzz/main.tf", "");
    Repo {
        _dir: dir,
        path,
        first,
        second,
        other,
    }
}

fn spec(url: &str) -> DriftScanSpec {
    serde_json::from_value(serde_json::json!({
        "source": {"git": {"url": url, "discover": ["live/*"]}},
        "jobTemplate": {"image": "hashicorp/terraform:{{ version }}", "defaultVersion": "1.9.8"}
    }))
    .unwrap()
}

const T: Duration = Duration::from_secs(30);

#[test]
fn file_url_resolves_refs_and_reads_the_tree_at_the_commit() {
    let r = repo();
    let url = format!("file://{}", r.path.display());
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = RepoCache::new(cache_dir.path().join("cache"));
    let none = Credentials::None;
    // HEAD is main's head; branches, tags, short and full ids resolve.
    assert_eq!(cache.sync(&url, "HEAD", None, &none, T).unwrap(), r.second);
    assert_eq!(cache.sync(&url, "main", None, &none, T).unwrap(), r.second);
    assert_eq!(cache.sync(&url, "other", None, &none, T).unwrap(), r.other);
    assert_eq!(cache.sync(&url, "v1", None, &none, T).unwrap(), r.first);
    assert_eq!(
        cache
            .sync(&url, "refs/heads/other", None, &none, T)
            .unwrap(),
        r.other
    );
    assert_eq!(
        cache.sync(&url, &r.first[..10], None, &none, T).unwrap(),
        r.first
    );
    // The trigger's commit wins over the ref.
    assert_eq!(
        cache.sync(&url, "main", Some(&r.first), &none, T).unwrap(),
        r.first
    );
    assert_eq!(
        cache
            .sync(&url, "main", Some(&r.other[..12]), &none, T)
            .unwrap(),
        r.other
    );
    // Errors name the field.
    let err = cache.sync(&url, "nope", None, &none, T).unwrap_err();
    assert!(matches!(err, RepoError::Ref { .. }));
    assert!(
        err.to_string().starts_with("spec.source.git.ref \"nope\""),
        "{err}"
    );
    let missing = "0123456789012345678901234567890123456789";
    let err = cache
        .sync(&url, "main", Some(missing), &none, T)
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("of the trigger is not in spec.source.git.url"),
        "{err}"
    );
    let err = cache
        .sync(&url, "main", Some("not-a-sha"), &none, T)
        .unwrap_err();
    assert!(matches!(err, RepoError::Commit { .. }), "{err}");
    let bad = format!("file://{}/missing", r.path.display());
    let err = cache.sync(&bad, "HEAD", None, &none, T).unwrap_err();
    assert!(
        err.to_string().starts_with("spec.source.git.url file://"),
        "{err}"
    );

    // Each commit's tree, not the work tree.
    let spec = spec(&url);
    let at_first = resolve(&cache.snapshot(&url, &r.first).unwrap(), &r.first, &spec).unwrap();
    assert_eq!(at_first.stacks, ["live/a", "live/b"]);
    assert_eq!(at_first.images["live/a"], "hashicorp/terraform:1.5.7");
    assert_eq!(at_first.images["live/b"], "hashicorp/terraform:1.0.3");
    assert_eq!(at_first.modules["live/a"], ["modules/net"]);
    let at_second = resolve(&cache.snapshot(&url, &r.second).unwrap(), &r.second, &spec).unwrap();
    assert_eq!(at_second.stacks, ["live/a", "live/b", "live/c"]);
    assert_eq!(at_second.images["live/a"], "hashicorp/terraform:1.6.0");
    assert_eq!(at_second.images["live/c"], "hashicorp/terraform:1.9.8");
    // One bare repository per URL in the cache, reused.
    let entries: Vec<_> = std::fs::read_dir(cache.root()).unwrap().collect();
    assert_eq!(entries.len(), 2, "the repository and the failed URL's");
    assert!(cache.path_of(&url).join("HEAD").is_file());
}

#[test]
fn new_commits_are_fetched_into_the_cache() {
    let r = repo();
    let url = format!("file://{}", r.path.display());
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = RepoCache::new(cache_dir.path());
    assert_eq!(
        cache
            .sync(&url, "main", None, &Credentials::None, T)
            .unwrap(),
        r.second
    );
    write(&r.path, "live/e/main.tf", "");
    git(&r.path, &["add", "live/e"]);
    git(&r.path, &["commit", "-q", "-m", "three"]);
    let third = git(&r.path, &["rev-parse", "HEAD"]);
    assert_eq!(
        cache
            .sync(&url, "main", None, &Credentials::None, T)
            .unwrap(),
        third
    );
    let s = cache.snapshot(&url, &third).unwrap();
    assert!(s.paths.contains("live/e/main.tf"));
    assert!(
        !s.paths.contains("live/zzz/main.tf"),
        "uncommitted files are not in the tree"
    );
}

/// The `git-daemon` program itself: `git daemon` runs it as a child that killing `git` would
/// leave behind.
fn git_daemon() -> std::path::PathBuf {
    let out = Command::new("git").arg("--exec-path").output().unwrap();
    std::path::PathBuf::from(String::from_utf8(out.stdout).unwrap().trim()).join("git-daemon")
}

/// `git daemon` serving `base` on a free port of 127.0.0.1; killed on drop.
struct Daemon(std::process::Child, u16);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn daemon(base: &Path) -> Daemon {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(git_daemon())
        .args([
            "--reuseaddr",
            "--export-all",
            "--listen=127.0.0.1",
            &format!("--port={port}"),
            &format!("--base-path={}", base.display()),
            &base.display().to_string(),
        ])
        .spawn()
        .unwrap();
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Daemon(child, port);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("git daemon did not listen on {port}");
}

#[test]
fn git_daemon_url_resolves_like_file() {
    let r = repo();
    let d = daemon(r.path.parent().unwrap());
    let url = format!("git://127.0.0.1:{}/infra", d.1);
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = RepoCache::new(cache_dir.path());
    let none = Credentials::None;
    assert_eq!(cache.sync(&url, "HEAD", None, &none, T).unwrap(), r.second);
    assert_eq!(cache.sync(&url, "other", None, &none, T).unwrap(), r.other);
    assert_eq!(
        cache.sync(&url, "main", Some(&r.first), &none, T).unwrap(),
        r.first
    );
    let resolved = resolve(
        &cache.snapshot(&url, &r.other).unwrap(),
        &r.other,
        &spec(&url),
    )
    .unwrap();
    assert_eq!(resolved.stacks, ["live/a", "live/b", "live/d"]);
    let err = cache
        .sync(
            &format!("git://127.0.0.1:{}/nothing", d.1),
            "HEAD",
            None,
            &none,
            T,
        )
        .unwrap_err();
    assert!(matches!(err, RepoError::Fetch { .. }), "{err}");
}

#[tokio::test]
async fn a_silent_server_is_bounded_by_the_timeout() {
    // Accepts connections and never answers.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let _hold = std::thread::spawn(move || {
        // Hold every connection for 8 s, then hang up, so the blocked fetch thread ends (the
        // runtime waits for it when the test ends).
        let until = Instant::now() + Duration::from_secs(8);
        let mut held = Vec::new();
        while Instant::now() < until {
            if let Ok((s, _)) = listener.accept() {
                held.push(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    let (service, _handle) = tower_test::mock::pair::<
        http::Request<kube::client::Body>,
        http::Response<kube::client::Body>,
    >();
    let client = kube::Client::new(service, "default");
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = Arc::new(RepoCache::new(cache_dir.path()));
    let url = format!("git://127.0.0.1:{port}/infra");
    let started = Instant::now();
    let err = resolve_at(
        cache,
        &client,
        "ns",
        &spec(&url),
        None,
        Duration::from_secs(1),
    )
    .await
    .unwrap_err();
    let took = started.elapsed();
    assert!(err.contains("did not finish within 1s"), "{err}");
    assert!(
        err.starts_with("spec.source.git.url git://127.0.0.1"),
        "{err}"
    );
    assert!(took < Duration::from_secs(10), "{took:?}");
}

#[tokio::test]
async fn resolve_at_runs_off_the_runtime_and_pins_the_commit() {
    let r = repo();
    let url = format!("file://{}", r.path.display());
    let (service, _handle) = tower_test::mock::pair::<
        http::Request<kube::client::Body>,
        http::Response<kube::client::Body>,
    >();
    let client = kube::Client::new(service, "default");
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = Arc::new(RepoCache::new(cache_dir.path()));
    let head = resolve_at(cache.clone(), &client, "ns", &spec(&url), None, T)
        .await
        .unwrap();
    assert_eq!(head.commit, r.second);
    assert_eq!(head.stacks, ["live/a", "live/b", "live/c"]);
    let pinned = resolve_at(
        cache,
        &client,
        "ns",
        &spec(&url),
        Some(r.first[..8].into()),
        T,
    )
    .await
    .unwrap();
    assert_eq!(pinned.commit, r.first, "a short id becomes the full id");
    assert_eq!(pinned.stacks, ["live/a", "live/b"]);
    // A bad glob is a clear error, not a panic.
    let mut bad = spec(&url);
    bad.source.git.discover = vec!["[".into()];
    let cache_dir = tempfile::tempdir().unwrap();
    let err = resolve_at(
        Arc::new(RepoCache::new(cache_dir.path())),
        &client,
        "ns",
        &bad,
        None,
        T,
    )
    .await
    .unwrap_err();
    assert!(err.starts_with("spec.source.git.discover[0]"), "{err}");
}

/// A Terragrunt layout as its users write it: a root config, per-environment files read from
/// parent folders, dependencies between stacks, and modules named through functions.
fn terragrunt_repo() -> Snapshot {
    snap(&[
        (
            "root.hcl",
            "remote_state {\n  backend = \"s3\"\n}\nlocals {\n  account = read_terragrunt_config(find_in_parent_folders(\"account.hcl\"))\n}\n",
        ),
        ("terragrunt.hcl", "# the repository's own root config\n"),
        ("live/account.hcl", "locals { id = \"1\" }\n"),
        ("live/prod/env.hcl", "locals { env = \"prod\" }\n"),
        ("live/stage/env.hcl", "locals { env = \"stage\" }\n"),
        (
            "live/prod/vpc/terragrunt.hcl",
            "include \"root\" {\n  path = find_in_parent_folders(\"root.hcl\")\n}\nlocals {\n  env = read_terragrunt_config(find_in_parent_folders(\"env.hcl\"))\n}\nterraform {\n  source = \"${get_repo_root()}/modules/vpc?ref=x\"\n}\n",
        ),
        (
            "live/prod/app/terragrunt.hcl",
            "include {\n  path = find_in_parent_folders()\n}\n# read_terragrunt_config(\"../../stage/env.hcl\") is a comment\ndependency \"vpc\" {\n  config_path = \"../vpc\"\n}\ndependencies {\n  paths = [\"../db\", \"../../../../outside\"]\n}\nterraform {\n  source = \"${get_terragrunt_dir()}/../../../modules//app\"\n}\n",
        ),
        (
            "live/prod/db/terragrunt.hcl",
            "include \"root\" {\n  path = \"${get_terragrunt_dir()}/../../../root.hcl\"\n}\nterraform {\n  source = \"${get_parent_terragrunt_dir()}/modules/db\"\n}\ninputs = { x = \"${path_relative_from_include()}/y\" }\n",
        ),
        (
            "live/stage/vpc/terragrunt.hcl",
            "include \"root\" {\n  path = find_in_parent_folders(\"root.hcl\")\n}\nlocals {\n  env = read_terragrunt_config(\"../env.hcl\")\n}\nterraform {\n  source = \"../../../modules//vpc\"\n}\n",
        ),
        ("modules/vpc/main.tf", ""),
        ("modules/app/main.tf", ""),
        ("modules/db/main.tf", ""),
        ("README.md", "docs\n"),
    ])
}

#[test]
fn terragrunt_includes_reads_dependencies_and_function_sources() {
    let s = terragrunt_repo();
    let text = |p: &str| s.text(p).unwrap().to_owned();
    // include via find_in_parent_folders("root.hcl"); the root reads account.hcl (resolved
    // from the child, as Terragrunt does); env.hcl from the nearest parent; get_repo_root().
    assert_eq!(
        terragrunt_refs(&s, "live/prod/vpc", &text("live/prod/vpc/terragrunt.hcl")),
        [
            "live/account.hcl",
            "live/prod/env.hcl",
            "modules/vpc",
            "root.hcl"
        ]
    );
    // find_in_parent_folders() defaults to terragrunt.hcl (here the repository root's);
    // dependency and dependencies directories; a path leaving the repository and a comment
    // are ignored; get_terragrunt_dir() and the module root before `//`.
    assert_eq!(
        terragrunt_refs(&s, "live/prod/app", &text("live/prod/app/terragrunt.hcl")),
        ["live/prod/db", "live/prod/vpc", "modules", "terragrunt.hcl"]
    );
    // A literal include path with get_terragrunt_dir(); get_parent_terragrunt_dir() is the
    // included root's directory; other interpolations are skipped.
    assert_eq!(
        terragrunt_refs(&s, "live/prod/db", &text("live/prod/db/terragrunt.hcl")),
        ["live/account.hcl", "modules/db", "root.hcl"]
    );
    // read_terragrunt_config with a relative literal path.
    assert_eq!(
        terragrunt_refs(&s, "live/stage/vpc", &text("live/stage/vpc/terragrunt.hcl")),
        ["live/account.hcl", "live/stage/env.hcl", "root.hcl"]
    );
    // Nothing found above: nothing added.
    assert!(terragrunt_refs(&s, "", "include { path = find_in_parent_folders() }").is_empty());
}

#[test]
fn terragrunt_changes_select_only_the_stacks_that_read_them() {
    let s = terragrunt_repo();
    let stacks: Vec<String> = [
        "live/prod/vpc",
        "live/prod/app",
        "live/prod/db",
        "live/stage/vpc",
    ]
    .map(String::from)
    .to_vec();
    let g = module_graph(&s, &stacks);
    let hit = |files: &[&str]| {
        let files: Vec<String> = files.iter().map(|f| f.to_string()).collect();
        crate::scan::webhook::affected_stacks(&stacks, &files, &g)
    };
    assert_eq!(
        hit(&["live/prod/env.hcl"]),
        ["live/prod/vpc", "live/prod/app"]
    );
    assert_eq!(hit(&["live/stage/env.hcl"]), ["live/stage/vpc"]);
    // The root config and what it reads affect every stack including it, and app through its
    // dependencies (vpc and db include it).
    assert_eq!(
        hit(&["root.hcl"]),
        [
            "live/prod/vpc",
            "live/prod/app",
            "live/prod/db",
            "live/stage/vpc"
        ]
    );
    assert_eq!(
        hit(&["live/account.hcl"]),
        [
            "live/prod/vpc",
            "live/prod/app",
            "live/prod/db",
            "live/stage/vpc"
        ]
    );
    // A dependency's change reaches its dependents.
    assert_eq!(
        hit(&["live/prod/db/terragrunt.hcl"]),
        ["live/prod/app", "live/prod/db"]
    );
    // stage/vpc's `../../../modules//vpc` copies all of `modules` (the root before `//`).
    assert_eq!(
        hit(&["modules/db/main.tf"]),
        ["live/prod/app", "live/prod/db", "live/stage/vpc"]
    );
    // Including the repository root's terragrunt.hcl does not make every file count.
    assert!(hit(&["README.md"]).is_empty());
    assert_eq!(hit(&["terragrunt.hcl"]), ["live/prod/app"]);
}
