//! Shared helpers of the end-to-end tests, which run against a real Kubernetes API server.
//!
//! A test starts with [`client_or_skip`], installs the CRDs with [`install_crds`], and does its
//! work inside [`in_scope`], which gives it a fresh namespace and deletes everything it created
//! afterwards, whether the test passed, failed or panicked.
//!
//! Guarantees: every object a test creates carries the label [`RUN_LABEL`] with the name of its
//! namespace, so the cleanup finds cluster-scoped objects too; every write uses the field manager
//! [`FIELD_MANAGER`].
//!
//! Caveats: the tests share the cluster with whatever else runs there. They only touch the
//! Driftless CRDs (which they server-side apply, taking ownership of the fields they set) and
//! the objects they create themselves.

pub mod browser;
pub mod identity;
pub mod kubelet;
pub mod procs;

use std::future::Future;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, ensure, Context as _};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch,
    PatchParams, PostParams,
};
use kube::config::KubeConfigOptions;
use kube::core::Status;
use kube::{Client, Config};
use serde::Deserialize;
use serde_json::{json, Value};

/// Field manager of every write the suite makes.
pub const FIELD_MANAGER: &str = "driftless-e2e";

/// Label on every object a test creates; the value is the test's namespace.
pub const RUN_LABEL: &str = "driftless.dev/e2e-run";

/// Label on the namespaces the suite creates.
pub const NAMESPACE_LABEL: &str = "driftless.dev/e2e";

/// Why a test is skipped when there is no cluster.
pub const SKIP_REASON: &str =
    "KUBECONFIG is not set (the e2e suite needs a Kubernetes 1.33+ API server)";

/// The `Accept` header that asks the API server for a `meta.k8s.io/v1` Table, the format
/// `kubectl get` prints.
pub const TABLE_ACCEPT: &str = "application/json;as=Table;v=v1;g=meta.k8s.io";

/// How long a test waits for the API server to reach a state (CRD established, ...).
pub const WAIT: Duration = Duration::from_secs(60);

/// A client for the cluster in `KUBECONFIG`, or `None` when the variable is unset or empty.
///
/// A skipped test prints one line, `skipped: <test>: <reason>`, straight to stderr so that it
/// shows in `cargo test` output without `--nocapture`.
///
/// # Panics
/// When `KUBECONFIG` is set but unusable: the file cannot be read, the server does not answer,
/// or it runs a Kubernetes older than 1.33. A configured but broken cluster is a failure, never
/// a skip.
pub async fn client_or_skip(test: &str) -> Option<Client> {
    let kubeconfig = std::env::var_os("KUBECONFIG").unwrap_or_default();
    if kubeconfig.is_empty() {
        let line = format!("skipped: {test}: {SKIP_REASON}\n");
        // One write of the whole line, so parallel tests do not interleave their lines.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
        return None;
    }
    match connect().await {
        Ok(client) => Some(client),
        Err(err) => panic!(
            "{test}: KUBECONFIG={} is set but its API server cannot be used: {err:#}",
            kubeconfig.to_string_lossy()
        ),
    }
}

/// Like [`client_or_skip`], for tests whose Jobs must run to the end: also skipped (with the
/// reason) when no Job controller answers next to the API server, as with a bare API server.
pub async fn client_with_jobs_or_skip(test: &str) -> Option<Client> {
    let client = client_or_skip(test).await?;
    match kubelet::job_controller_or_skip(&client, "default").await {
        Ok(()) => Some(client),
        Err(reason) => {
            let line = format!("skipped: {test}: {reason:#}\n");
            let _ = std::io::stderr().lock().write_all(line.as_bytes());
            None
        }
    }
}

async fn connect() -> anyhow::Result<Client> {
    let mut config = Config::from_kubeconfig(&KubeConfigOptions::default())
        .await
        .context("cannot load the kubeconfig")?;
    config.connect_timeout = Some(Duration::from_secs(5));
    let url = config.cluster_url.clone();
    let client = Client::try_from(config).context("cannot build a client")?;
    let version = tokio::time::timeout(Duration::from_secs(20), client.apiserver_version())
        .await
        .map_err(|_| anyhow!("{url} did not answer within 20s"))?
        .with_context(|| format!("{url} is unreachable"))?;
    let minor: u32 = version
        .minor
        .trim_end_matches('+')
        .parse()
        .unwrap_or_default();
    ensure!(
        version.major == "1" && minor >= 33,
        "{url} runs Kubernetes {}; the e2e suite needs 1.33 or later",
        version.git_version
    );
    Ok(client)
}

/// Every Driftless CRD, generated from the Rust types (not read from the checked-in YAML, so a
/// stale YAML file cannot hide a broken type).
pub fn crds() -> Vec<CustomResourceDefinition> {
    driftless_crds::generate::crds()
}

/// Server-side applies every CRD (field manager [`FIELD_MANAGER`], forced) and waits until
/// each is `Established` with `NamesAccepted` and its resource is served. Returns the CRDs as
/// the server stored them.
pub async fn install_crds(client: &Client) -> anyhow::Result<Vec<CustomResourceDefinition>> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let mut names = Vec::new();
    for crd in crds() {
        let name = crd
            .metadata
            .name
            .clone()
            .context("a generated CRD has no name")?;
        api.patch(&name, &params, &Patch::Apply(&crd))
            .await
            .with_context(|| format!("server-side apply of CRD {name} failed"))?;
        names.push(name);
    }
    let mut stored = Vec::new();
    for name in names {
        stored.push(wait_for_crd(&api, &name).await?);
    }
    wait_for_discovery(client).await?;
    Ok(stored)
}

/// The `status` of a condition of a CRD, if the condition is there.
pub fn crd_condition<'a>(crd: &'a CustomResourceDefinition, type_: &str) -> Option<&'a str> {
    crd.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| c.status.as_str())
}

async fn wait_for_crd(
    api: &Api<CustomResourceDefinition>,
    name: &str,
) -> anyhow::Result<CustomResourceDefinition> {
    poll(
        &format!("CRD {name} to be Established and NamesAccepted"),
        || async {
            let crd = api.get(name).await?;
            let ready = crd_condition(&crd, "Established") == Some("True")
                && crd_condition(&crd, "NamesAccepted") == Some("True");
            Ok(ready.then_some(crd))
        },
    )
    .await
}

/// Waits until the API group serves every Driftless resource (a new CRD is Established a
/// moment before its endpoints answer).
async fn wait_for_discovery(client: &Client) -> anyhow::Result<()> {
    let plurals: Vec<String> = kinds().into_iter().map(|k| k.resource.plural).collect();
    poll(
        "the driftless.dev API group to serve every kind",
        || async {
            let Ok(list) = client
                .list_api_group_resources(driftless_crds::API_VERSION)
                .await
            else {
                return Ok(None);
            };
            let served = plurals
                .iter()
                .all(|p| list.resources.iter().any(|r| &r.name == p));
            Ok(served.then_some(()))
        },
    )
    .await
}

/// Calls `check` every 250ms until it returns `Some`, for at most [`WAIT`].
pub async fn poll<T, F, Fut>(what: &str, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(value) = check().await? {
            return Ok(value);
        }
        if tokio::time::Instant::now() > deadline {
            bail!("timed out after {}s waiting for {what}", WAIT.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// One Driftless kind as the e2e tests address it.
#[derive(Clone, Debug)]
pub struct Kind {
    /// Group, version, kind and plural.
    pub resource: ApiResource,
    /// Whether objects of the kind live in a namespace.
    pub namespaced: bool,
}

/// Every Driftless kind, in the order of [`crds`].
pub fn kinds() -> Vec<Kind> {
    crds()
        .into_iter()
        .map(|crd| {
            let gvk = GroupVersionKind::gvk(
                &crd.spec.group,
                driftless_crds::VERSION,
                &crd.spec.names.kind,
            );
            Kind {
                resource: ApiResource::from_gvk_with_plural(&gvk, &crd.spec.names.plural),
                namespaced: crd.spec.scope == "Namespaced",
            }
        })
        .collect()
}

/// A fresh namespace named `<prefix><random>`, labelled as an e2e namespace; returns its name.
/// For benchmarks, which delete it themselves.
pub async fn fresh_namespace(client: &Client, prefix: &str) -> anyhow::Result<String> {
    let api: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(
        json!({"metadata": {"generateName": prefix, "labels": {"driftless.dev/e2e": "true"}}}),
    )?;
    api.create(&PostParams::default(), &ns)
        .await?
        .metadata
        .name
        .context("the new namespace has no name")
}

/// The kind named `kind` (`ApplyPolicy`, ...).
pub fn kind(kind: &str) -> anyhow::Result<Kind> {
    kinds()
        .into_iter()
        .find(|k| k.resource.kind == kind)
        .ok_or_else(|| anyhow!("{kind} is not a Driftless kind"))
}

/// What a test works in: a client and a namespace of its own, deleted afterwards with every
/// cluster-scoped object labelled with its name.
#[derive(Clone)]
pub struct Scope {
    /// The client.
    pub client: Client,
    /// The test's namespace.
    pub namespace: String,
}

impl Scope {
    /// An API for `kind`: in the test's namespace for namespaced kinds, cluster-wide otherwise.
    pub fn api(&self, kind: &str) -> anyhow::Result<Api<DynamicObject>> {
        let kind = self::kind(kind)?;
        Ok(if kind.namespaced {
            Api::namespaced_with(self.client.clone(), &self.namespace, &kind.resource)
        } else {
            Api::all_with(self.client.clone(), &kind.resource)
        })
    }

    /// Deletes the Node objects labelled with this run ([`RUN_LABEL`]): Nodes are
    /// cluster-scoped, so deleting the namespace does not take them. Best effort.
    pub async fn delete_nodes(&self) {
        let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(self.client.clone());
        let _ = nodes
            .delete_collection(
                &DeleteParams::default(),
                &ListParams::default().labels(&format!("{RUN_LABEL}={}", self.namespace)),
            )
            .await;
    }

    /// A name unique to this test run, for cluster-scoped objects: `<namespace>-<suffix>`.
    pub fn name(&self, suffix: &str) -> String {
        format!("{}-{suffix}", self.namespace)
    }

    /// A complete object of `kind`: apiVersion, kind, metadata (name, the test's namespace for
    /// namespaced kinds, [`RUN_LABEL`]) and `spec`.
    pub fn object(&self, kind: &str, name: &str, spec: Value) -> anyhow::Result<Value> {
        let info = self::kind(kind)?;
        let mut metadata = json!({ "name": name, "labels": { RUN_LABEL: self.namespace } });
        if info.namespaced {
            metadata["namespace"] = json!(self.namespace);
        }
        Ok(json!({
            "apiVersion": info.resource.api_version,
            "kind": kind,
            "metadata": metadata,
            "spec": spec,
        }))
    }

    /// Puts the object into this scope: the test's namespace for namespaced kinds, and the
    /// [`RUN_LABEL`] so the cleanup finds it.
    pub fn adopt(&self, object: &mut Value) -> anyhow::Result<()> {
        let kind = object["kind"]
            .as_str()
            .context("the object has no kind")?
            .to_owned();
        let metadata = object
            .as_object_mut()
            .context("the object is not a mapping")?
            .entry("metadata")
            .or_insert_with(|| json!({}));
        if self::kind(&kind)?.namespaced {
            metadata["namespace"] = json!(self.namespace);
        }
        let labels = metadata
            .as_object_mut()
            .context("metadata is not a mapping")?
            .entry("labels")
            .or_insert_with(|| json!({}));
        labels[RUN_LABEL] = json!(self.namespace);
        Ok(())
    }

    /// Deletes every cluster-scoped Driftless object labelled with this run, then the namespace
    /// (with everything in it). Does not wait for the namespace to be gone.
    pub async fn clean_up(&self) -> anyhow::Result<()> {
        let selector = format!("{RUN_LABEL}={}", self.namespace);
        let mut problems = Vec::new();
        for kind in kinds().into_iter().filter(|k| !k.namespaced) {
            let api: Api<DynamicObject> = Api::all_with(self.client.clone(), &kind.resource);
            let lp = ListParams::default().labels(&selector);
            if let Err(err) = api.delete_collection(&DeleteParams::default(), &lp).await {
                problems.push(format!("{}: {err}", kind.resource.plural));
            }
        }
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        match namespaces
            .delete(&self.namespace, &DeleteParams::background())
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(err) => problems.push(format!("namespace {}: {err}", self.namespace)),
        }
        ensure!(
            problems.is_empty(),
            "cleanup failed: {}",
            problems.join("; ")
        );
        Ok(())
    }
}

/// Runs `body` in a fresh [`Scope`] named after `test`, then cleans up, also when `body`
/// fails or panics (the panic is resumed after the cleanup).
pub async fn in_scope<F, Fut>(client: &Client, test: &str, body: F) -> anyhow::Result<()>
where
    F: FnOnce(Scope) -> Fut,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let scope = create_scope(client, test).await?;
    // A spawned task turns a panic into a JoinError, so the cleanup below still runs.
    let outcome = tokio::spawn(body(scope.clone())).await;
    let cleanup = scope.clean_up().await;
    match outcome {
        Ok(result) => result.and(cleanup),
        Err(err) if err.is_panic() => std::panic::resume_unwind(err.into_panic()),
        Err(err) => Err(err.into()),
    }
}

async fn create_scope(client: &Client, test: &str) -> anyhow::Result<Scope> {
    let mut prefix: String = format!("driftless-e2e-{test}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(40)
        .collect();
    prefix = format!("{}-", prefix.trim_end_matches('-'));
    let namespace: Namespace = serde_json::from_value(json!({
        "metadata": { "generateName": prefix, "labels": { NAMESPACE_LABEL: "true" } },
    }))?;
    let api: Api<Namespace> = Api::all(client.clone());
    let created = api
        .create(&PostParams::default(), &namespace)
        .await
        .with_context(|| format!("cannot create a namespace {prefix}*"))?;
    Ok(Scope {
        client: client.clone(),
        namespace: created.metadata.name.context("the namespace has no name")?,
    })
}

/// The API server's error response, when `err` is one.
pub fn api_error(err: &kube::Error) -> Option<&Status> {
    match err {
        kube::Error::Api(response) => Some(response),
        _ => None,
    }
}

/// Turns a JSON object into a [`DynamicObject`] for the kube APIs.
pub fn dynamic(object: &Value) -> anyhow::Result<DynamicObject> {
    serde_json::from_value(object.clone()).context("not a Kubernetes object")
}

/// A `meta.k8s.io/v1` Table, the server-side rendering of `kubectl get`.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Table {
    /// The columns, `Name` first.
    pub column_definitions: Vec<TableColumn>,
    /// One row per object.
    #[serde(default)]
    pub rows: Vec<TableRow>,
}

/// A column of a [`Table`].
#[derive(Clone, Debug, Deserialize)]
pub struct TableColumn {
    /// The header, as `kubectl get` prints it.
    pub name: String,
    /// `string`, `integer`, `date`, ...
    #[serde(rename = "type")]
    pub type_: String,
    /// 0 for columns always shown, higher for `-o wide` only.
    #[serde(default)]
    pub priority: i64,
}

/// A row of a [`Table`].
#[derive(Clone, Debug, Deserialize)]
pub struct TableRow {
    /// One cell per column.
    pub cells: Vec<Value>,
    /// The object (as partial metadata, by default).
    #[serde(default)]
    pub object: Value,
}

impl Table {
    /// Names of the columns `kubectl get` shows without `-o wide`.
    pub fn default_columns(&self) -> Vec<&str> {
        self.column_definitions
            .iter()
            .filter(|c| c.priority == 0)
            .map(|c| c.name.as_str())
            .collect()
    }

    /// The row of the object named `name`, as column name → cell.
    pub fn row(&self, name: &str) -> Option<Vec<(&str, &Value)>> {
        let row = self
            .rows
            .iter()
            .find(|r| r.object["metadata"]["name"] == name)?;
        Some(
            self.column_definitions
                .iter()
                .map(|c| c.name.as_str())
                .zip(row.cells.iter())
                .collect(),
        )
    }
}

/// Lists the objects of `api` as a Table, exactly as `kubectl get` asks for them.
pub async fn get_table(client: &Client, api: &Api<DynamicObject>) -> anyhow::Result<Table> {
    let mut request = kube::core::Request::new(api.resource_url()).list(&ListParams::default())?;
    request
        .headers_mut()
        .insert("accept", TABLE_ACCEPT.parse()?);
    let text = client
        .request_text(request)
        .await
        .with_context(|| format!("GET {} as Table failed", api.resource_url()))?;
    let value: Value = serde_json::from_str(&text)?;
    ensure!(
        value["kind"] == "Table",
        "asked for a Table, got {}",
        value["kind"]
    );
    Ok(serde_json::from_value(value)?)
}

/// What the API server answered to a create with an explicit `fieldValidation` directive.
#[derive(Debug)]
pub struct CreateOutcome {
    /// HTTP status.
    pub status: u16,
    /// The `Warning` headers.
    pub warnings: Vec<String>,
    /// The body: the created object, or a `Status` on failure.
    pub body: Value,
}

/// Creates `object` through `api` with `fieldValidation=<directive>` (`Strict`, `Warn`,
/// `Ignore`), optionally as a dry run, and returns status, warnings and body even on failure.
pub async fn create_with_field_validation(
    client: &Client,
    api: &Api<DynamicObject>,
    object: &Value,
    directive: &str,
    dry_run: bool,
) -> anyhow::Result<CreateOutcome> {
    let params = PostParams {
        dry_run,
        ..PostParams::default()
    };
    let mut request = kube::core::Request::new(api.resource_url())
        .create(&params, serde_json::to_vec(object)?)?;
    *request.uri_mut() = format!("{}&fieldValidation={directive}", request.uri()).parse()?;
    let response = client
        .send(request.map(kube::client::Body::from))
        .await
        .context("POST failed")?;
    let status = response.status().as_u16();
    let warnings = response
        .headers()
        .get_all("warning")
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect();
    let bytes = response.into_body().collect_bytes().await?;
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Ok(CreateOutcome {
        status,
        warnings,
        body,
    })
}

/// Every place where the server changed or dropped a field of `sent` in `got`, as
/// `path: sent X, got Y`. Fields the server added (defaults) are not differences; a `null`, an
/// empty list or an empty mapping sent equals absent.
pub fn differences(sent: &Value, got: &Value) -> Vec<String> {
    let mut out = Vec::new();
    diff(sent, got, "", &mut out);
    out
}

fn diff(sent: &Value, got: &Value, path: &str, out: &mut Vec<String>) {
    match (sent, got) {
        (Value::Object(sent), Value::Object(got)) => {
            for (key, value) in sent {
                let path = format!("{path}.{key}");
                match got.get(key) {
                    Some(got) => diff(value, got, &path, out),
                    // The API server drops null and, in its own typed objects such as CRDs,
                    // empty lists and maps (`omitempty`); neither changes the meaning.
                    None if is_empty(value) => {}
                    None => out.push(format!("{path}: sent {value}, the server dropped it")),
                }
            }
        }
        (Value::Array(sent_items), Value::Array(got_items)) => {
            if sent_items.len() != got_items.len() {
                out.push(format!(
                    "{path}: sent {} items, got {}",
                    sent_items.len(),
                    got_items.len()
                ));
                return;
            }
            for (i, (s, g)) in sent_items.iter().zip(got_items).enumerate() {
                diff(s, g, &format!("{path}[{i}]"), out);
            }
        }
        (Value::Number(s), Value::Number(g)) if s.as_f64() == g.as_f64() => {}
        (s, g) if s == g => {}
        (s, g) => out.push(format!("{path}: sent {s}, got {g}")),
    }
}

fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Array(items) => items.is_empty(),
        Value::Object(map) => map.is_empty(),
        _ => false,
    }
}

/// The repository root (the parent of `e2e/`).
pub fn repo_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// One YAML document of a file.
#[derive(Clone, Debug)]
pub struct Document {
    /// The file, relative to the repository root when it is inside it.
    pub file: PathBuf,
    /// Index of the document in the file, from 0.
    pub index: usize,
    /// The document as JSON.
    pub value: Value,
}

impl Document {
    /// `file#index kind/name`, for messages.
    pub fn describe(&self) -> String {
        format!(
            "{}#{} {}/{}",
            self.file.display(),
            self.index,
            self.value["kind"].as_str().unwrap_or("?"),
            self.value["metadata"]["name"].as_str().unwrap_or("?")
        )
    }
}

/// Every non-empty YAML document of every `*.yaml` / `*.yml` file below `dir`, in path order.
pub fn read_documents(dir: &Path) -> anyhow::Result<Vec<Document>> {
    let mut files = Vec::new();
    collect_yaml_files(dir, &mut files)
        .with_context(|| format!("cannot read {}", dir.display()))?;
    files.sort();
    let root = repo_root();
    let mut documents = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        let shown = file.strip_prefix(&root).unwrap_or(&file).to_path_buf();
        let values = driftless_crds::yaml::parse_yaml(&text)
            .map_err(|err| anyhow::anyhow!("{}: {err}", shown.display()))?;
        for (index, value) in values.into_iter().enumerate() {
            documents.push(Document {
                file: shown.clone(),
                index,
                value,
            });
        }
    }
    Ok(documents)
}

fn collect_yaml_files(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_yaml_files(&path, out)?;
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        ) {
            out.push(path);
        }
    }
    Ok(())
}

/// One CEL rule (`x-kubernetes-validations`) of a generated CRD.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CelRule {
    /// The kind whose schema holds the rule.
    pub kind: String,
    /// Where the rule sits, as a field path with `[]` for list items: `spec.tasks[].file`.
    pub path: String,
    /// The CEL expression.
    pub rule: String,
    /// The message the API server reports when the rule fails.
    pub message: String,
}

/// Every CEL rule of every generated CRD.
pub fn cel_rules() -> Vec<CelRule> {
    let mut rules = Vec::new();
    for crd in crds() {
        let kind = crd.spec.names.kind.clone();
        for version in crd.spec.versions {
            let Some(schema) = version.schema.and_then(|s| s.open_api_v3_schema) else {
                continue;
            };
            let Ok(schema) = serde_json::to_value(schema) else {
                continue;
            };
            walk_rules(&kind, &schema, "", &mut rules);
        }
    }
    rules
}

fn walk_rules(kind: &str, schema: &Value, path: &str, out: &mut Vec<CelRule>) {
    if let Some(list) = schema["x-kubernetes-validations"].as_array() {
        for rule in list {
            out.push(CelRule {
                kind: kind.to_owned(),
                path: path.to_owned(),
                rule: rule["rule"].as_str().unwrap_or_default().to_owned(),
                message: rule["message"].as_str().unwrap_or_default().to_owned(),
            });
        }
    }
    if let Some(properties) = schema["properties"].as_object() {
        for (name, property) in properties {
            let path = if path.is_empty() {
                name.clone()
            } else {
                format!("{path}.{name}")
            };
            walk_rules(kind, property, &path, out);
        }
    }
    if schema["items"].is_object() {
        walk_rules(kind, &schema["items"], &format!("{path}[]"), out);
    }
    if schema["additionalProperties"].is_object() {
        walk_rules(
            kind,
            &schema["additionalProperties"],
            &format!("{path}{{}}"),
            out,
        );
    }
}

/// The current time as RFC 3339 with seconds, as Kubernetes writes `metav1.Time`.
pub fn now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Server-side applies `object` (field manager [`FIELD_MANAGER`], forced) and returns what the
/// server stored.
pub async fn apply(api: &Api<DynamicObject>, object: &Value) -> anyhow::Result<DynamicObject> {
    let name = object["metadata"]["name"]
        .as_str()
        .context("the object has no metadata.name")?;
    api.patch(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(object),
    )
    .await
    .with_context(|| {
        let kind = object["kind"].as_str().unwrap_or("object");
        format!("server-side apply of {kind} {name} failed")
    })
}

/// Server-side applies `status` to the status subresource of the object `name`.
pub async fn apply_status(
    api: &Api<DynamicObject>,
    kind: &str,
    name: &str,
    status: Value,
) -> anyhow::Result<DynamicObject> {
    let api_version = self::kind(kind)?.resource.api_version;
    let patch = json!({ "apiVersion": api_version, "kind": kind, "status": status });
    api.patch_status(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .with_context(|| format!("server-side apply of {kind} {name} status failed"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_ignore_defaults_and_report_drops() {
        let sent = json!({"a": 1, "b": {"c": [1, 2]}, "n": null, "l": [], "m": {}});
        let got = json!({"a": 1.0, "b": {"c": [1, 2], "d": true}, "e": "default"});
        assert!(differences(&sent, &got).is_empty());
        let got = json!({"a": 2, "b": {"c": [1]}});
        assert_eq!(
            differences(&sent, &got),
            vec![".a: sent 1, got 2", ".b.c: sent 2 items, got 1"]
        );
        assert_eq!(
            differences(&json!({"x": {"y": 1}}), &json!({"x": {}})),
            vec![".x.y: sent 1, the server dropped it"]
        );
    }

    #[test]
    fn finds_rules_with_their_paths() {
        let rules = cel_rules();
        assert!(rules.iter().any(|r| r.kind == "ApplyPolicy"
            && r.path == "spec.tasks[]"
            && r.message.starts_with("exactly one task type")));
        assert!(rules
            .iter()
            .any(|r| r.kind == "DriftScan" && r.path == "spec.source.git"));
    }
}
