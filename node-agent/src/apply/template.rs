//! Templates (`file.template`) and `when` conditions, with minijinja: `facts` and `vars` in
//! scope, undefined values refused (a typo is an error, never an empty string).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use minijinja::{Environment, UndefinedBehavior, Value};

/// A template or condition error, naming the task and field.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("task {task:?}: {field}: {message}")]
pub struct TemplateError {
    /// The task.
    pub task: String,
    /// The field (`file.template`, `when`).
    pub field: String,
    /// What minijinja said.
    pub message: String,
}

/// The template engine, configured once, and the templates it parsed: a template is parsed
/// the first time it is checked or rendered and reused after that, for as long as this value
/// lives (one apply run; `driftless apply` shares it between validation and the run) and
/// while at most [`CACHED_TEMPLATES`] distinct templates were parsed since the cache last
/// started afresh.
pub struct Templates {
    env: Mutex<Environment<'static>>,
    /// Templates parsed since the cache was last cleared (counted by the loader).
    loaded: Arc<AtomicUsize>,
}

/// Distinct templates kept parsed. A parsed template holds about 12 KiB (minijinja's code
/// generator reserves room for instructions), so caching every template of a 1,000-file policy
/// cost 12 MiB of resident memory; past this many the cache starts afresh.
pub const CACHED_TEMPLATES: usize = 64;

impl Default for Templates {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Templates")
    }
}

/// minijinja's error with its detail (`undefined value` alone does not say which).
fn describe(err: &minijinja::Error) -> String {
    let mut message = match err.detail() {
        Some(detail) => format!("{}: {detail}", err.kind()),
        // A cached template's name is its source text (see `Templates::new`); the message
        // names it the way minijinja names a template parsed from a string.
        None if err.name().is_some_and(|n| n != "<expression>") => {
            format!("{} (in <string>:{})", err.kind(), err.line().unwrap_or(0))
        }
        None => err.to_string(),
    };
    if let Some(line) = err.line() {
        message.push_str(&format!(" (line {line})"));
    }
    message
}

/// Template delimiters never belong in an expression, and minijinja's expression lexer panics
/// on a closing one (found by `fuzz/run.sh`), so they are refused before it sees them.
fn no_delimiters(source: &str) -> Result<(), String> {
    match ["{{", "}}", "{%", "%}", "{#", "#}"]
        .iter()
        .find(|d| source.contains(*d))
    {
        Some(d) => Err(format!(
            "{d:?} cannot appear in an expression: write the condition without template delimiters, e.g. `facts.os.family == \"debian\"`"
        )),
        None => Ok(()),
    }
}

/// Repetition (`seq * n`, `"text" * n`) in a `when` condition: minijinja repeats sequences
/// lazily and without bound, so `[1] * 10**15 == [1] * 10**15` would compare for hours inside a
/// single instruction (found by `fuzz/run.sh`). A condition has no use for repetition, so `*`
/// is only accepted between operands that can be numbers: number literals, variables and
/// lookups, arithmetic, and the numeric filters.
fn no_repetition(source: &str) -> Result<(), String> {
    use minijinja::machinery::ast::{BinOpKind, CallArg, Expr};
    fn numeric(e: &Expr<'_>) -> bool {
        match e {
            Expr::Const(c) => c.value.is_number(),
            Expr::Var(_) | Expr::GetAttr(_) | Expr::GetItem(_) => true,
            Expr::UnaryOp(u) => numeric(&u.expr),
            Expr::BinOp(b) => {
                !matches!(b.op, BinOpKind::Concat) && numeric(&b.left) && numeric(&b.right)
            }
            Expr::Filter(f) => matches!(
                f.name,
                "int" | "float" | "length" | "count" | "abs" | "round"
            ),
            _ => false,
        }
    }
    fn walk(e: &Expr<'_>) -> Result<(), String> {
        let args = |args: &[CallArg<'_>]| {
            args.iter().try_for_each(|a| match a {
                CallArg::Pos(e)
                | CallArg::Kwarg(_, e)
                | CallArg::PosSplat(e)
                | CallArg::KwargSplat(e) => walk(e),
            })
        };
        match e {
            Expr::Var(_) | Expr::Const(_) => Ok(()),
            Expr::Slice(s) => {
                walk(&s.expr)?;
                [&s.start, &s.stop, &s.step]
                    .into_iter()
                    .flatten()
                    .try_for_each(walk)
            }
            Expr::UnaryOp(u) => walk(&u.expr),
            Expr::BinOp(b) => {
                if matches!(b.op, BinOpKind::Mul) && !(numeric(&b.left) && numeric(&b.right)) {
                    return Err("`*` repeats sequences and strings here; a condition may only multiply numbers".into());
                }
                walk(&b.left)?;
                walk(&b.right)
            }
            Expr::Compare(c) => {
                walk(&c.expr)?;
                c.ops.iter().try_for_each(|op| walk(&op.expr))
            }
            Expr::IfExpr(i) => {
                walk(&i.test_expr)?;
                walk(&i.true_expr)?;
                i.false_expr.iter().try_for_each(walk)
            }
            Expr::Filter(f) => {
                f.expr.iter().try_for_each(walk)?;
                args(&f.args)
            }
            Expr::Test(t) => {
                walk(&t.expr)?;
                args(&t.args)
            }
            Expr::GetAttr(g) => walk(&g.expr),
            Expr::GetItem(g) => {
                walk(&g.expr)?;
                walk(&g.subscript_expr)
            }
            Expr::Call(c) => {
                walk(&c.expr)?;
                args(&c.args)
            }
            Expr::List(l) => l.items.iter().try_for_each(walk),
            Expr::Map(m) => m.keys.iter().chain(&m.values).try_for_each(walk),
        }
    }
    match minijinja::machinery::parse_expr(source) {
        Ok(expr) => walk(&expr),
        // Syntax errors are reported by compile_expression with minijinja's own wording.
        Err(_) => Ok(()),
    }
}

/// Instructions one template render or `when` evaluation may execute.
pub const TEMPLATE_FUEL: u64 = 5_000_000;

/// The most text one template may render (16 MiB): fuel counts instructions, not bytes, and
/// one `"text" * n` instruction may build up to 100 MB, so a loop of them would otherwise
/// run for minutes and fill memory before the fuel ran out.
pub const TEMPLATE_MAX_OUTPUT: usize = 16 << 20;

/// How long one render may take (checked whenever it writes text): each instruction may be
/// a 100 MB string operation, so the fuel alone would allow hours.
pub const TEMPLATE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

/// Why a render was cut short.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Limit {
    Size,
    Time,
}

/// Collects rendered text; refuses to grow past [`TEMPLATE_MAX_OUTPUT`] or to go on after
/// [`TEMPLATE_DEADLINE`].
struct BoundedOutput {
    text: Vec<u8>,
    deadline: std::time::Instant,
    exceeded: Option<Limit>,
}

impl BoundedOutput {
    fn new() -> Self {
        Self {
            text: Vec::new(),
            deadline: std::time::Instant::now() + TEMPLATE_DEADLINE,
            exceeded: None,
        }
    }
}

impl std::io::Write for BoundedOutput {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.text.len() + buf.len() > TEMPLATE_MAX_OUTPUT {
            self.exceeded = Some(Limit::Size);
            return Err(std::io::Error::other("template output limit"));
        }
        if std::time::Instant::now() > self.deadline {
            self.exceeded = Some(Limit::Time);
            return Err(std::io::Error::other("template deadline"));
        }
        self.text.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The filters minijinja's `builtins` feature defines; plugin filters may not shadow them.
const BUILTIN_FILTERS: &[&str] = &[
    "abs",
    "attr",
    "batch",
    "bool",
    "capitalize",
    "count",
    "d",
    "default",
    "dictsort",
    "e",
    "escape",
    "first",
    "float",
    "groupby",
    "indent",
    "int",
    "items",
    "join",
    "last",
    "length",
    "lines",
    "list",
    "lower",
    "map",
    "max",
    "min",
    "pprint",
    "reject",
    "rejectattr",
    "replace",
    "reverse",
    "round",
    "safe",
    "select",
    "selectattr",
    "slice",
    "sort",
    "split",
    "string",
    "sum",
    "title",
    "tojson",
    "trim",
    "unique",
    "upper",
    "urlencode",
];

/// Calls a plugin filter: `{"filter", "value", "args"}` in, `{"value"}` out.
fn call_filter(
    instance: &Mutex<crate::plugins::Instance>,
    name: &str,
    value: &Value,
    args: &[Value],
) -> Result<Value, minijinja::Error> {
    let fail =
        |message: String| minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, message);
    let input = serde_json::json!({
        "filter": name,
        "value": serde_json::to_value(value).map_err(|e| fail(e.to_string()))?,
        "args": serde_json::to_value(args).map_err(|e| fail(e.to_string()))?,
    });
    let mut instance = instance
        .lock()
        .map_err(|_| fail(format!("filter {name}: plugin instance poisoned")))?;
    let out = instance
        .call("driftless_filter", &input, false)
        .map_err(|e| fail(e.to_string()))?;
    match out.get("value") {
        Some(v) => Ok(Value::from_serialize(v)),
        None => Err(fail(format!("filter {name}: the plugin returned no value"))),
    }
}

impl Templates {
    /// Strict undefined behaviour; no auto-escaping (these are config files, not HTML).
    pub fn new() -> Self {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_keep_trailing_newline(true);
        // Bounds the work one render may do, so a runaway loop in a template fails the task
        // instead of hanging the agent.
        env.set_fuel(Some(TEMPLATE_FUEL));
        // The cache: a template's source is its name, and the loader hands the name back as
        // the source; minijinja keeps what it loaded compiled. Names would otherwise choose
        // auto-escaping by their extension (`.html`); these are config files, never escaped.
        let loaded = Arc::new(AtomicUsize::new(0));
        let counter = loaded.clone();
        env.set_loader(move |source| {
            counter.fetch_add(1, Ordering::Relaxed);
            Ok(Some(source.to_owned()))
        });
        env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
        Self {
            env: Mutex::new(env),
            loaded,
        }
    }

    /// [`Templates::new`] plus the filters of WebAssembly plugins (ApplyPolicy
    /// `spec.templateFilters`): each filter the plugins' manifests name, called as
    /// `{{ value | name(args...) }}`. A name a built-in filter or an earlier plugin already
    /// has is refused, naming both.
    pub fn with_plugin_filters(
        uses: &[driftless_crds::plugin::PluginUse],
        root: &std::path::Path,
    ) -> Result<Self, String> {
        use crate::plugins::{Instance, Kind, Plugin, DEFAULT_FUEL};
        let templates = Self::new();
        {
            let mut env = templates.env();
            let mut taken: Vec<(String, String)> = Vec::new();
            for (i, use_) in uses.iter().enumerate() {
                let at = format!("spec.templateFilters[{i}]");
                let plugin = Plugin::for_use(use_).map_err(|e| format!("{at}: {e}"))?;
                let filters = plugin.manifest.filters.clone();
                let instance = Instance::new(plugin, use_, Kind::Filter, root, DEFAULT_FUEL)
                    .map_err(|e| format!("{at}: {e}"))?;
                let instance = Arc::new(Mutex::new(instance));
                for filter in filters {
                    if let Some((_, owner)) = taken.iter().find(|(f, _)| *f == filter) {
                        return Err(format!("{at}: filter {filter:?} is also plugin {owner}'s"));
                    }
                    if BUILTIN_FILTERS.contains(&filter.as_str()) {
                        return Err(format!(
                            "{at}: filter {filter:?} is a built-in filter's name"
                        ));
                    }
                    taken.push((filter.clone(), use_.name.clone()));
                    let instance = instance.clone();
                    let name = filter.clone();
                    env.add_filter(
                        filter,
                        move |value: Value, args: minijinja::value::Rest<Value>| {
                            call_filter(&instance, &name, &value, &args)
                        },
                    );
                }
            }
        }
        Ok(templates)
    }

    /// The environment, its template cache cleared when it holds [`CACHED_TEMPLATES`].
    fn env(&self) -> MutexGuard<'_, Environment<'static>> {
        let mut env = self.env.lock().unwrap_or_else(|e| e.into_inner());
        if self.loaded.load(Ordering::Relaxed) >= CACHED_TEMPLATES {
            env.clear_templates();
            self.loaded.store(0, Ordering::Relaxed);
        }
        env
    }

    fn context(facts: &serde_json::Value, vars: &serde_json::Value) -> Value {
        minijinja::context! {
            facts => Value::from_serialize(facts),
            vars => Value::from_serialize(vars),
        }
    }

    /// Checks a template's syntax without rendering it.
    pub fn check_template(&self, source: &str) -> Result<(), String> {
        self.env()
            .get_template(source)
            .map(|_| ())
            .map_err(|e| describe(&e))
    }

    /// Checks an expression's syntax without evaluating it.
    pub fn check_expression(&self, source: &str) -> Result<(), String> {
        no_delimiters(source)?;
        no_repetition(source)?;
        self.env()
            .compile_expression(source)
            .map(|_| ())
            .map_err(|e| describe(&e))
    }

    /// Renders a template.
    pub fn render(
        &self,
        task: &str,
        field: &str,
        source: &str,
        facts: &serde_json::Value,
        vars: &serde_json::Value,
    ) -> Result<String, TemplateError> {
        let error = |e: minijinja::Error| TemplateError {
            task: task.into(),
            field: field.into(),
            message: describe(&e),
        };
        let env = self.env();
        let template = env.get_template(source).map_err(error)?;
        let mut out = BoundedOutput::new();
        let rendered = template.render_captured_to(Self::context(facts, vars), &mut out);
        match rendered {
            Ok(_) => String::from_utf8(out.text).map_err(|e| TemplateError {
                task: task.into(),
                field: field.into(),
                message: format!("rendered text is not UTF-8: {e}"),
            }),
            Err(_) if out.exceeded.is_some() => Err(TemplateError {
                task: task.into(),
                field: field.into(),
                message: if out.exceeded == Some(Limit::Size) {
                    format!(
                        "the rendered text exceeds {} MiB; a file this large does not belong in a template",
                        TEMPLATE_MAX_OUTPUT >> 20
                    )
                } else {
                    format!(
                        "rendering took longer than {} s; look for loops over huge ranges or strings",
                        TEMPLATE_DEADLINE.as_secs()
                    )
                },
            }),
            Err(e) => Err(error(e)),
        }
    }

    /// Evaluates a `when` condition to true or false.
    pub fn when(
        &self,
        task: &str,
        source: &str,
        facts: &serde_json::Value,
        vars: &serde_json::Value,
    ) -> Result<bool, TemplateError> {
        let error = |e: minijinja::Error| TemplateError {
            task: task.into(),
            field: "when".into(),
            message: describe(&e),
        };
        no_delimiters(source)
            .and_then(|()| no_repetition(source))
            .map_err(|message| TemplateError {
                task: task.into(),
                field: "when".into(),
                message,
            })?;
        let env = self.env();
        let expr = env.compile_expression(source).map_err(error)?;
        let value = expr.eval(Self::context(facts, vars)).map_err(error)?;
        Ok(value.is_true())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cached_templates_render_like_fresh_ones() {
        let t = Templates::new();
        let (facts, vars) = (json!({}), json!({"x": "<b>"}));
        // Checked first (as validation does), then rendered twice from the cache; a source
        // ending like an HTML file name is still not escaped.
        let source = "{{ vars.x }}.html";
        t.check_template(source).unwrap();
        for _ in 0..2 {
            assert_eq!(
                t.render("t", "f", source, &facts, &vars).unwrap(),
                "<b>.html"
            );
        }
        // Two templates never share a cache entry.
        assert_eq!(
            t.render("t", "f", "{{ vars.x }}!", &facts, &vars).unwrap(),
            "<b>!"
        );
        let err = t
            .render("t", "f", "{{ vars.y }}", &facts, &vars)
            .unwrap_err();
        assert!(err.message.starts_with("undefined value"), "{err}");
        assert!(!err.message.contains("vars.y }}"), "{err}");
        // Past the cache's bound it starts afresh; every template still renders.
        for i in 0..CACHED_TEMPLATES + 2 {
            let source = format!("{{{{ vars.x }}}}-{i}");
            assert_eq!(
                t.render("t", "f", &source, &facts, &vars).unwrap(),
                format!("<b>-{i}")
            );
        }
        assert!(t.loaded.load(Ordering::Relaxed) <= CACHED_TEMPLATES);
        assert_eq!(
            t.render("t", "f", source, &facts, &vars).unwrap(),
            "<b>.html"
        );
        assert_eq!(
            t.check_template("{{ broken").unwrap_err(),
            Templates::new().check_template("{{ broken").unwrap_err()
        );
    }

    #[test]
    fn delimiters_in_expressions_are_refused_not_a_panic() {
        // The input the template fuzzer found (fuzz/artifacts/template/crash-3f303e61...).
        let crash = "facts.os.ffiily ==  }} {% for a in vars.admins %}{{ a | uppe| }}{% endp";
        let t = Templates::new();
        assert!(t
            .check_expression(crash)
            .unwrap_err()
            .contains("cannot appear in an expression"));
        let err = t.when("w", crash, &json!({}), &json!({})).unwrap_err();
        assert_eq!(err.field, "when");
        assert!(t.check_expression("{{ facts.x }}").is_err());
        assert!(t.check_expression("facts.x == 1").is_ok());
    }

    #[test]
    fn string_repetition_in_a_loop_stops_at_the_output_limit() {
        // The shape of the input the template fuzzer timed out on: a loop writing a string
        // repeated millions of times. Without the output limit this renders gigabytes.
        let t = Templates::new();
        let started = std::time::Instant::now();
        let err = t
            .render(
                "big",
                "file.template",
                "{% for i in range(100000) %}{{ \"ab\" * 2222222 }}{% endfor %}",
                &json!({}),
                &json!({}),
            )
            .unwrap_err();
        assert!(err.message.contains("exceeds 16 MiB"), "{}", err.message);
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        // Just under the limit still renders.
        let out = t
            .render("ok", "t", "{{ \"-\" * 1000 }}\n", &json!({}), &json!({}))
            .unwrap();
        assert_eq!(out.len(), 1001);
    }

    #[test]
    fn conditions_may_multiply_numbers_but_not_repeat_sequences() {
        // The input the template fuzzer timed out on (fuzz/artifacts/template/timeout-ef20e533...):
        // `40020862*()` repeats an empty tuple 40 million times, lazily, and `<` walks it.
        let timeout = "---44444~4+444~04444~044444~40020862*()<6*()<2-f6-f-0-5-00000 -f";
        let t = Templates::new();
        let started = std::time::Instant::now();
        for bad in [
            timeout,
            "[1] * 1000000000000000 == [1] * 1000000000000000",
            "'ab' * 3 == vars.x",
            "(vars.list | list) * 5",
            "range(3) * 9",
            "facts.os.family in ['debian'] * 2",
        ] {
            let err = t.check_expression(bad).unwrap_err();
            assert!(err.contains("may only multiply numbers"), "{bad}: {err}");
            let err = t.when("w", bad, &json!({}), &json!({})).unwrap_err();
            assert!(
                err.message.contains("may only multiply numbers"),
                "{bad}: {err}"
            );
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        let facts = json!({"memory": {"total_bytes": 8_000_000_000_u64}, "cpu": {"count": 4}});
        for good in [
            "facts.memory.total_bytes * 0.5 > 2000000000",
            "facts.cpu.count * 2 == 8",
            "(facts.cpu.count + 1) * -2 < 0",
            "(vars.n | int) * 3 == 0 or true",
            "[1, 2] | length * 2 == 4",
        ] {
            t.check_expression(good).unwrap();
            assert!(
                t.when("w", good, &facts, &json!({"n": "0"})).unwrap(),
                "{good}"
            );
        }
    }

    #[test]
    fn slow_renders_stop_at_the_deadline() {
        // Each iteration builds a 100 MB string (one instruction, so barely any fuel) and
        // writes its length: without the deadline this runs for many minutes.
        let t = Templates::new();
        let started = std::time::Instant::now();
        let err = t
            .render(
                "slow",
                "file.template",
                "{% for i in range(100000) %}{% set x = 'ab' * 49999999 %}{{ x|length }}{% endfor %}",
                &json!({}),
                &json!({}),
            )
            .unwrap_err();
        assert!(
            err.message.contains("took longer than 10 s"),
            "{}",
            err.message
        );
        assert!(started.elapsed() < TEMPLATE_DEADLINE + std::time::Duration::from_secs(5));
    }

    #[test]
    fn runaway_loops_run_out_of_fuel() {
        let t = Templates::new();
        let err = t
            .render(
                "loop",
                "template",
                "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
                &json!({}),
                &json!({}),
            )
            .unwrap_err();
        assert!(err.message.contains("fuel"), "{}", err.message);
    }

    #[test]
    fn renders_facts_and_vars_and_refuses_undefined() {
        let t = Templates::new();
        let facts = json!({"hostname": "web1", "os": {"family": "debian"}});
        let vars = json!({"admins": ["alice", "bob"]});
        let out = t
            .render(
                "motd",
                "file.template",
                "{{ facts.hostname }}: {{ vars.admins | join(\", \") }}\n",
                &facts,
                &vars,
            )
            .unwrap();
        assert_eq!(out, "web1: alice, bob\n");
        let err = t
            .render("motd", "file.template", "{{ vars.nope }}", &facts, &vars)
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("task \"motd\": file.template: undefined value"),
            "{err}"
        );
        assert!(t
            .when("x", "facts.os.family == 'debian'", &facts, &vars)
            .unwrap());
        assert!(!t
            .when("x", "facts.os.family == 'redhat'", &facts, &vars)
            .unwrap());
        let err = t.when("x", "facts.nope.deeper", &facts, &vars).unwrap_err();
        assert_eq!(err.field, "when");
        assert!(t.check_template("{% if %}").is_err());
        assert!(t.check_expression("a ==").is_err());
    }
}
