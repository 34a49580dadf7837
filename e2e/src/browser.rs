//! Headless Chromium driven over the W3C WebDriver protocol (Debian's `chromium` and
//! `chromium-driver`): enough to load pages, run scripts in them and take screenshots.

use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use serde_json::{json, Value};

use crate::identity::Process;
use crate::procs::free_port;

/// A chromedriver and one browser session; both end when dropped.
pub struct Browser {
    http: reqwest::Client,
    session: String,
    base: String,
    _driver: Process,
}

/// Where Debian installs the browser and its driver, if it does.
pub fn find() -> Option<(String, String)> {
    let which = |names: &[&str]| {
        names.iter().find_map(|n| {
            std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|d| d.join(n))
                    .find(|p| p.is_file())
                    .map(|p| p.display().to_string())
            })
        })
    };
    Some((
        which(&["chromium", "chromium-browser"])?,
        which(&["chromedriver"])?,
    ))
}

impl Browser {
    /// Starts chromedriver and a headless session with a `width`×`height` window.
    pub async fn start(
        chromium: &str,
        driver: &str,
        width: u32,
        height: u32,
    ) -> anyhow::Result<Self> {
        let port = free_port();
        // Its own process group: dropping the browser kills the driver and every Chromium
        // process it started.
        let child = Command::new(driver)
            .process_group(0)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {driver}"))?;
        let driver_process = Process(child);
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = http.get(format!("{base}/status")).send().await;
            if let Ok(r) = ready {
                if r.status().is_success() {
                    break;
                }
            }
            if Instant::now() > deadline {
                bail!("chromedriver did not answer on {base} within 20 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let created: Value = http
            .post(format!("{base}/session"))
            .json(&json!({ "capabilities": { "alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": chromium,
                    "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                             "--disable-dev-shm-usage", "--no-first-run",
                             "--disable-background-networking", "--disable-extensions",
                             "--disable-component-update", "--disable-sync",
                             format!("--window-size={width},{height}")]
                }
            }}}))
            .send()
            .await?
            .json()
            .await?;
        let session = created["value"]["sessionId"]
            .as_str()
            .with_context(|| format!("no session: {created}"))?
            .to_owned();
        Ok(Self {
            http,
            session,
            base,
            _driver: driver_process,
        })
    }

    async fn command(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Value,
    ) -> anyhow::Result<Value> {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let mut request = self.http.request(method, &url);
        if !body.is_null() {
            request = request.json(&body);
        }
        let answer: Value = request.send().await?.json().await?;
        if let Some(error) = answer["value"].get("error") {
            bail!("WebDriver {path}: {error}: {}", answer["value"]["message"]);
        }
        Ok(answer["value"].clone())
    }

    /// Loads `url` (returns when the page's load event fired).
    pub async fn goto(&self, url: &str) -> anyhow::Result<()> {
        self.command(reqwest::Method::POST, "/url", json!({ "url": url }))
            .await
            .map(drop)
    }

    /// Runs `script` (a function body; `return` gives the result) in the page.
    pub async fn eval(&self, script: &str) -> anyhow::Result<Value> {
        self.command(
            reqwest::Method::POST,
            "/execute/sync",
            json!({ "script": script, "args": [] }),
        )
        .await
    }

    /// Polls `script` until it returns `true`.
    pub async fn wait_for(
        &self,
        what: &str,
        script: &str,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.eval(script).await? == Value::Bool(true) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{what}: not true within {timeout:?}: {script}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Saves a PNG of the window to `path`.
    pub async fn screenshot(&self, path: &Path) -> anyhow::Result<()> {
        use base64::Engine as _;
        let png = self
            .command(reqwest::Method::GET, "/screenshot", Value::Null)
            .await?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().context("screenshot is not a string")?)?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
    }

    /// The addresses of every resource the page loaded (documents, scripts, styles, fetches,
    /// event streams), from the Resource Timing API.
    pub async fn requested(&self) -> anyhow::Result<Vec<String>> {
        let names = self
            .eval(
                "return [location.href].concat(performance.getEntriesByType('resource')\
                 .map(function (e) { return e.name; }));",
            )
            .await?;
        Ok(names
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let group = format!("-{}", self._driver.0.id());
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stderr(Stdio::null())
            .status();
    }
}
