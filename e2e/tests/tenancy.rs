//! The operator as a confused deputy, against the API server in `KUBECONFIG`: DriftScans that
//! try to make the real operator binary send a Secret of their namespace to a listener the
//! test runs (Git basic auth over plain `http://`, a GitHub App JWT to an `http://` apiUrl), run
//! their Jobs under another ServiceAccount, or live in a namespace the operator was not given.
//! Each is triggered by annotation; the listener must see no request, the operator must create
//! no Job, and each DriftScan's `Stalled` condition must say why (the one outside the scan
//! namespaces gets no status at all, and the webhook API answers 401 for it).
#![allow(clippy::unwrap_used)]

use std::io::{Read as _, Write as _};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{ensure, Context as _};
use driftless_crds::drift_scan::DriftScan;
use driftless_e2e::{client_or_skip, in_scope, install_crds, poll};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

const TOKEN: &str = "victim-token-0f9e8d";

struct Operator(Child);

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A listener on 127.0.0.1 that answers every request with a Basic auth challenge (what makes
/// a Git client send its credentials) and records what it was sent.
fn attacker() -> (u16, Arc<Mutex<Vec<String>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    std::thread::spawn(move || {
        for mut conn in l.incoming().flatten() {
            let _ = conn.set_read_timeout(Some(Duration::from_millis(500)));
            let mut buf = [0u8; 16 * 1024];
            let n = conn.read(&mut buf).unwrap_or(0);
            record
                .lock()
                .unwrap()
                .push(String::from_utf8_lossy(&buf[..n]).into_owned());
            let _ = conn.write_all(
                b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"git\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
    });
    (port, seen)
}

fn scan(name: &str, namespace: &str, source: serde_json::Value, sa: Option<&str>) -> DriftScan {
    let mut git = source;
    git["stacks"] = json!(["live"]);
    let mut spec = json!({"source": {"git": git}});
    if let Some(sa) = sa {
        spec["jobTemplate"] = json!({"serviceAccountName": sa});
    }
    serde_json::from_value(json!({
        "apiVersion": "driftless.dev/v1alpha1", "kind": "DriftScan",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec
    }))
    .unwrap()
}

/// The `Stalled` condition's message of a DriftScan, once it has one.
async fn stalled(scans: &Api<DriftScan>, name: &str) -> anyhow::Result<String> {
    poll(&format!("the Stalled condition of {name}"), || {
        let scans = scans.clone();
        let name = name.to_owned();
        async move {
            let s = scans.get(&name).await?;
            Ok(s.status.and_then(|st| {
                st.conditions
                    .into_iter()
                    .find(|c| c.type_ == "Stalled" && c.status == "True")
                    .map(|c| c.message)
            }))
        }
    })
    .await
}

#[tokio::test]
async fn driftscans_cannot_make_the_operator_a_confused_deputy() {
    let Some(client) =
        client_or_skip("driftscans_cannot_make_the_operator_a_confused_deputy").await
    else {
        return;
    };
    install_crds(&client).await.unwrap();
    let bin = driftless_e2e::procs::binary("driftless-operator", "driftless-operator");
    let (port, seen) = attacker();
    in_scope(&client, "tenancy", move |scope| async move {
        let ns = scope.namespace.clone();
        let other = scope.name("other");
        let namespaces: Api<Namespace> = Api::all(scope.client.clone());
        namespaces
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": other}}))?,
            )
            .await?;
        let result = async {
            for namespace in [&ns, &other] {
                let secrets: Api<Secret> = Api::namespaced(scope.client.clone(), namespace);
                secrets
                    .create(
                        &PostParams::default(),
                        &serde_json::from_value(json!({
                            "metadata": {"name": "victim"},
                            "stringData": {"token": TOKEN, "private-key": "-----BEGIN PRIVATE KEY-----"}
                        }))?,
                    )
                    .await?;
            }
            let url = format!("http://127.0.0.1:{port}/repo.git");
            let https = json!({"url": url, "credentials": {"https": {"name": "victim"}}});
            let app = json!({"url": "https://github.com/o/r.git", "credentials": {"githubApp": {
                "secretRef": {"name": "victim"}, "appId": 1, "installationId": 2,
                "apiUrl": format!("http://127.0.0.1:{port}/api")}}});
            let local = json!({"url": "file:///nonexistent"});
            let attacks = [
                scan("steal-basic", &ns, https.clone(), None),
                scan("steal-jwt", &ns, app, None),
                scan("borrow-sa", &ns, local, Some("default")),
                scan("elsewhere", &other, https, None),
            ];
            for s in &attacks {
                let api: Api<DriftScan> =
                    Api::namespaced(scope.client.clone(), s.metadata.namespace.as_ref().unwrap());
                api.create(&PostParams::default(), s).await?;
            }
            let listen = driftless_e2e::procs::free_port();
            let log_path = std::env::temp_dir().join(format!("{ns}-operator.log"));
            let _operator = Operator(
                Command::new(&bin)
                    .args(["run", "--listen", &format!("127.0.0.1:{listen}"), "--namespace", &ns,
                           "--identity", "e2e-tenancy", "--runner-image", "driftless/operator:e2e",
                           "--scan-service-account", "driftless-scan-runner", "--no-leader-election"])
                    .stdout(Stdio::null())
                    .stderr(std::fs::File::create(&log_path)?)
                    .spawn()
                    .context("starting driftless-operator")?,
            );
            let http = reqwest::Client::new();
            poll("the operator's /api/health", || {
                let http = http.clone();
                async move {
                    Ok(match http.get(format!("http://127.0.0.1:{listen}/api/health")).send().await {
                        Ok(r) if r.status() == 200 => Some(()),
                        _ => None,
                    })
                }
            })
            .await?;
            let trigger = json!({"metadata": {"annotations": {"driftless.dev/trigger": "1"}}});
            for s in &attacks {
                let api: Api<DriftScan> =
                    Api::namespaced(scope.client.clone(), s.metadata.namespace.as_ref().unwrap());
                api.patch(s.metadata.name.as_ref().unwrap(), &PatchParams::default(), &Patch::Merge(&trigger))
                    .await?;
            }
            let scans: Api<DriftScan> = Api::namespaced(scope.client.clone(), &ns);
            let m = stalled(&scans, "steal-basic").await?;
            ensure!(
                m.contains(&format!("spec.source.git.url \"http://127.0.0.1:{port}/repo.git\": credentials are never sent over plain http://")),
                "{m}"
            );
            let m = stalled(&scans, "steal-jwt").await?;
            ensure!(
                m.contains("spec.source.git.credentials.githubApp.apiUrl") && m.contains("JWT is never sent over plain http://"),
                "{m}"
            );
            let m = stalled(&scans, "borrow-sa").await?;
            ensure!(
                m.contains("spec.jobTemplate.serviceAccountName \"default\": only \"driftless-scan-runner\" may be used"),
                "{m}"
            );
            // Outside the scan namespaces: no status, one log line, and the webhook API
            // answers as for a DriftScan that does not exist.
            let elsewhere: Api<DriftScan> = Api::namespaced(scope.client.clone(), &other);
            let log = poll("the operator's log line about the ignored DriftScan", || {
                let log_path = log_path.clone();
                async move {
                    let log = std::fs::read_to_string(&log_path)?;
                    Ok(log.contains("DriftScan ignored").then_some(log))
                }
            })
            .await?;
            ensure!(log.contains(&other), "{log}");
            tokio::time::sleep(Duration::from_secs(2)).await;
            let s = elsewhere.get("elsewhere").await?;
            ensure!(s.status.is_none(), "the operator wrote a status outside its namespaces: {:?}", s.status);
            let r = http
                .post(format!("http://127.0.0.1:{listen}/api/v1/namespaces/{other}/driftscans/elsewhere/scan"))
                .bearer_auth(TOKEN)
                .send()
                .await?;
            ensure!(r.status() == 401, "webhook for a DriftScan elsewhere: {}", r.status());
            for namespace in [&ns, &other] {
                let jobs: Api<Job> = Api::namespaced(scope.client.clone(), namespace);
                let list = jobs.list(&ListParams::default()).await?;
                ensure!(list.items.is_empty(), "Jobs created in {namespace}: {}", list.items.len());
            }
            let seen = seen.lock().unwrap().clone();
            ensure!(seen.is_empty(), "the listener was reached: {seen:?}");
            Ok(())
        }
        .await;
        let _ = namespaces.delete(&other, &DeleteParams::default()).await;
        result
    })
    .await
    .unwrap();
}
