//! Static checks of terraform/ (Terraform itself cannot download providers here): every .tf file
//! parses as HCL; every variable is documented, typed and used; every reference (in outputs and
//! everywhere else) resolves to a declared variable, local, resource, data source, module or
//! module output; module calls pass only variables the child declares; IP sets ignore runtime
//! changes to `addresses`; IAM policies have no wildcard; the EC2 example requires IMDSv2 and
//! renders its user data with exactly the variables the template uses.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use hcl::expr::{Expression, ObjectKey, TemplateExpr, TraversalOperator};
use hcl::template::{Directive, Element, Template};
use hcl::{Block, Body};
use palisade_tests::workspace_root;

fn terraform_root() -> PathBuf {
    workspace_root().join("terraform")
}

/// A reference such as `var.x`, `module.m.out`, `aws_iam_role.blocker[0].arn`: the root name
/// and the attribute names of the traversal (index and splat steps left out).
#[derive(Debug, Clone)]
struct Ref {
    root: String,
    attrs: Vec<String>,
    /// Where it was found, for error messages.
    at: String,
}

/// Names bound locally (for-expression variables, dynamic block iterators, template for loops).
type Scope = Vec<String>;

/// Collects references and string literals from expressions and bodies.
#[derive(Default)]
struct Collector {
    refs: Vec<Ref>,
    /// Every string literal (and the literal parts of templates), for wildcard checks.
    literals: Vec<String>,
    /// Every `templatefile(path, vars)` call: the path expression and the variable names passed.
    templatefiles: Vec<(Expression, BTreeSet<String>)>,
}

impl Collector {
    fn expr(&mut self, expr: &Expression, scope: &mut Scope, at: &str) {
        match expr {
            Expression::Null | Expression::Bool(_) | Expression::Number(_) => {}
            Expression::String(s) => self.literals.push(s.clone()),
            Expression::Array(items) => {
                for item in items {
                    self.expr(item, scope, at);
                }
            }
            Expression::Object(object) => {
                for (key, value) in object {
                    // A bare identifier key is a literal name in Terraform, not a reference.
                    if let ObjectKey::Expression(key) = key
                        && !matches!(key, Expression::Variable(_))
                    {
                        self.expr(key, scope, at);
                    }
                    self.expr(value, scope, at);
                }
            }
            Expression::TemplateExpr(template) => self.template_expr(template, scope, at),
            Expression::Variable(var) => self.reference(var.as_str(), &[], scope, at),
            Expression::Traversal(traversal) => {
                if let Expression::Variable(var) = &traversal.expr {
                    let attrs: Vec<String> = traversal
                        .operators
                        .iter()
                        .filter_map(|op| match op {
                            TraversalOperator::GetAttr(name) => Some(name.to_string()),
                            _ => None,
                        })
                        .collect();
                    self.reference(var.as_str(), &attrs, scope, at);
                } else {
                    self.expr(&traversal.expr, scope, at);
                }
                for op in &traversal.operators {
                    if let TraversalOperator::Index(index) = op {
                        self.expr(index, scope, at);
                    }
                }
            }
            Expression::FuncCall(call) => {
                if call.name.name.as_str() == "templatefile"
                    && let [path, Expression::Object(vars)] = call.args.as_slice()
                {
                    let names = vars
                        .keys()
                        .map(|k| match k {
                            ObjectKey::Identifier(id) => id.to_string(),
                            ObjectKey::Expression(Expression::Variable(v)) => v.to_string(),
                            ObjectKey::Expression(Expression::String(s)) => s.clone(),
                            other => panic!("{at}: unsupported templatefile key {other:?}"),
                        })
                        .collect();
                    self.templatefiles.push((path.clone(), names));
                }
                for arg in &call.args {
                    self.expr(arg, scope, at);
                }
            }
            Expression::Parenthesis(inner) => self.expr(inner, scope, at),
            Expression::Conditional(cond) => {
                self.expr(&cond.cond_expr, scope, at);
                self.expr(&cond.true_expr, scope, at);
                self.expr(&cond.false_expr, scope, at);
            }
            Expression::Operation(op) => match op.as_ref() {
                hcl::expr::Operation::Unary(unary) => self.expr(&unary.expr, scope, at),
                hcl::expr::Operation::Binary(binary) => {
                    self.expr(&binary.lhs_expr, scope, at);
                    self.expr(&binary.rhs_expr, scope, at);
                }
            },
            Expression::ForExpr(for_expr) => {
                self.expr(&for_expr.collection_expr, scope, at);
                let depth = scope.len();
                scope.extend(for_expr.key_var.iter().map(|k| k.to_string()));
                scope.push(for_expr.value_var.to_string());
                if let Some(key) = &for_expr.key_expr {
                    self.expr(key, scope, at);
                }
                self.expr(&for_expr.value_expr, scope, at);
                if let Some(cond) = &for_expr.cond_expr {
                    self.expr(cond, scope, at);
                }
                scope.truncate(depth);
            }
            other => panic!("{at}: expression kind not handled by the checker: {other:?}"),
        }
    }

    fn template_expr(&mut self, template: &TemplateExpr, scope: &mut Scope, at: &str) {
        let template = Template::from_expr(template)
            .unwrap_or_else(|e| panic!("{at}: invalid template {template}: {e}"));
        self.template(&template, scope, at);
    }

    fn template(&mut self, template: &Template, scope: &mut Scope, at: &str) {
        for element in template.elements() {
            match element {
                Element::Literal(s) => self.literals.push(s.clone()),
                Element::Interpolation(interp) => self.expr(&interp.expr, scope, at),
                Element::Directive(directive) => match directive.as_ref() {
                    Directive::If(dir) => {
                        self.expr(&dir.cond_expr, scope, at);
                        self.template(&dir.true_template, scope, at);
                        if let Some(f) = &dir.false_template {
                            self.template(f, scope, at);
                        }
                    }
                    Directive::For(dir) => {
                        self.expr(&dir.collection_expr, scope, at);
                        let depth = scope.len();
                        scope.extend(dir.key_var.iter().map(|k| k.to_string()));
                        scope.push(dir.value_var.to_string());
                        self.template(&dir.template, scope, at);
                        scope.truncate(depth);
                    }
                },
            }
        }
    }

    fn reference(&mut self, root: &str, attrs: &[String], scope: &Scope, at: &str) {
        if scope.iter().any(|s| s == root) {
            return;
        }
        self.refs.push(Ref {
            root: root.to_owned(),
            attrs: attrs.to_vec(),
            at: at.to_owned(),
        });
    }

    fn body(&mut self, body: &Body, scope: &mut Scope, at: &str) {
        for attr in body.attributes() {
            self.expr(&attr.expr, scope, &format!("{at}.{}", attr.key));
        }
        for block in body.blocks() {
            let at = format!("{at}.{}", block_name(block));
            match block.identifier.as_str() {
                "dynamic" => {
                    // for_each and labels are in the outer scope; `content` sees the iterator.
                    let iterator = attr(&block.body, "iterator")
                        .map(|e| match e {
                            Expression::Variable(v) => v.to_string(),
                            other => panic!("{at}: iterator must be a name, got {other:?}"),
                        })
                        .or_else(|| block.labels.first().map(|l| l.as_str().to_owned()))
                        .unwrap_or_else(|| panic!("{at}: dynamic block without a label"));
                    for a in block.body.attributes() {
                        if a.key.as_str() != "iterator" {
                            self.expr(&a.expr, scope, &format!("{at}.{}", a.key));
                        }
                    }
                    scope.push(iterator);
                    for content in block.body.blocks() {
                        self.body(&content.body, scope, &format!("{at}.content"));
                    }
                    scope.pop();
                }
                "variable" => {
                    // `type` is a type constraint (string, list(string), object({..})), not a
                    // reference.
                    for a in block.body.attributes() {
                        if a.key.as_str() != "type" {
                            self.expr(&a.expr, scope, &format!("{at}.{}", a.key));
                        }
                    }
                    for inner in block.body.blocks() {
                        self.body(&inner.body, scope, &at);
                    }
                }
                "lifecycle" => {
                    // ignore_changes lists attribute names of the resource, not references.
                    for a in block.body.attributes() {
                        if a.key.as_str() != "ignore_changes" {
                            self.expr(&a.expr, scope, &format!("{at}.{}", a.key));
                        }
                    }
                    for inner in block.body.blocks() {
                        self.body(&inner.body, scope, &at);
                    }
                }
                _ => self.body(&block.body, scope, &at),
            }
        }
    }
}

fn block_name(block: &Block) -> String {
    let mut name = block.identifier.to_string();
    for label in &block.labels {
        name.push('.');
        name.push_str(label.as_str());
    }
    name
}

fn attr<'a>(body: &'a Body, key: &str) -> Option<&'a Expression> {
    body.attributes()
        .find(|a| a.key.as_str() == key)
        .map(|a| &a.expr)
}

fn blocks<'a>(body: &'a Body, identifier: &'a str) -> impl Iterator<Item = &'a Block> + 'a {
    body.blocks()
        .filter(move |b| b.identifier.as_str() == identifier)
}

fn label(block: &Block, i: usize) -> String {
    block
        .labels
        .get(i)
        .map(|l| l.as_str().to_owned())
        .unwrap_or_else(|| panic!("{}: missing label {i}", block_name(block)))
}

/// One Terraform module: a directory's .tf files.
struct Module {
    dir: PathBuf,
    files: Vec<(PathBuf, Body)>,
    variables: BTreeMap<String, Block>,
    locals: BTreeMap<String, Expression>,
    resources: BTreeMap<(String, String), Block>,
    data: BTreeMap<(String, String), Block>,
    modules: BTreeMap<String, Block>,
    outputs: BTreeMap<String, Block>,
}

impl Module {
    fn load(dir: &Path) -> Module {
        let mut module = Module {
            dir: dir.to_owned(),
            files: Vec::new(),
            variables: BTreeMap::new(),
            locals: BTreeMap::new(),
            resources: BTreeMap::new(),
            data: BTreeMap::new(),
            modules: BTreeMap::new(),
            outputs: BTreeMap::new(),
        };
        let mut paths: Vec<PathBuf> = fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.expect("dir entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "tf"))
            .collect();
        paths.sort();
        for path in paths {
            let text = fs::read_to_string(&path).expect("read .tf");
            let body: Body =
                hcl::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            for block in body.blocks() {
                let unique = |kind: &str, inserted: bool| {
                    assert!(
                        inserted,
                        "{}: duplicate {kind} {}",
                        path.display(),
                        block_name(block)
                    )
                };
                match block.identifier.as_str() {
                    "variable" => unique(
                        "variable",
                        module
                            .variables
                            .insert(label(block, 0), block.clone())
                            .is_none(),
                    ),
                    "output" => unique(
                        "output",
                        module
                            .outputs
                            .insert(label(block, 0), block.clone())
                            .is_none(),
                    ),
                    "module" => unique(
                        "module",
                        module
                            .modules
                            .insert(label(block, 0), block.clone())
                            .is_none(),
                    ),
                    "resource" => unique(
                        "resource",
                        module
                            .resources
                            .insert((label(block, 0), label(block, 1)), block.clone())
                            .is_none(),
                    ),
                    "data" => unique(
                        "data source",
                        module
                            .data
                            .insert((label(block, 0), label(block, 1)), block.clone())
                            .is_none(),
                    ),
                    "locals" => {
                        for a in block.body.attributes() {
                            let fresh = module
                                .locals
                                .insert(a.key.to_string(), a.expr.clone())
                                .is_none();
                            assert!(fresh, "{}: duplicate local {}", path.display(), a.key);
                        }
                    }
                    "terraform" | "provider" => {}
                    other => panic!("{}: unexpected top-level block {other}", path.display()),
                }
            }
            module.files.push((path, body));
        }
        assert!(!module.files.is_empty(), "{}: no .tf files", dir.display());
        module
    }

    fn collect(&self) -> Collector {
        let mut collector = Collector::default();
        for (path, body) in &self.files {
            let name = path
                .strip_prefix(terraform_root())
                .unwrap_or(path)
                .display()
                .to_string();
            collector.body(body, &mut Vec::new(), &name);
        }
        collector
    }

    /// The child module a `module` block calls, for local sources.
    fn child(&self, call: &Block) -> Module {
        let source = match attr(&call.body, "source") {
            Some(Expression::String(s)) => s.clone(),
            other => panic!(
                "module {}: source must be a string, got {other:?}",
                label(call, 0)
            ),
        };
        assert!(
            source.starts_with("./") || source.starts_with("../"),
            "module {}: only local sources are checked here, got {source}",
            label(call, 0)
        );
        Module::load(&self.dir.join(source))
    }

    /// Checks one reference; returns a description of what is wrong, if anything.
    fn resolve(&self, r: &Ref) -> Option<String> {
        let first = r.attrs.first().map(String::as_str);
        let second = r.attrs.get(1).map(String::as_str);
        let missing = |what: &str| Some(format!("{}: {what} is not declared", r.at));
        match r.root.as_str() {
            "path" | "terraform" | "count" | "each" | "self" => None,
            "var" => match first {
                Some(name) if self.variables.contains_key(name) => None,
                _ => missing(&format!("var.{}", first.unwrap_or("?"))),
            },
            "local" => match first {
                Some(name) if self.locals.contains_key(name) => None,
                _ => missing(&format!("local.{}", first.unwrap_or("?"))),
            },
            "data" => match (first, second) {
                (Some(t), Some(n)) if self.data.contains_key(&(t.to_owned(), n.to_owned())) => None,
                _ => missing(&format!("data.{}", r.attrs.join("."))),
            },
            "module" => {
                let Some(call) = first.and_then(|m| self.modules.get(m)) else {
                    return missing(&format!("module.{}", first.unwrap_or("?")));
                };
                let output = second?;
                if self.child(call).outputs.contains_key(output) {
                    None
                } else {
                    Some(format!(
                        "{}: module.{}.{output}: the module has no such output",
                        r.at,
                        label(call, 0)
                    ))
                }
            }
            resource_type => match first {
                Some(name)
                    if self
                        .resources
                        .contains_key(&(resource_type.to_owned(), name.to_owned())) =>
                {
                    None
                }
                _ => Some(format!(
                    "{}: {resource_type}.{} is neither a resource nor a known name",
                    r.at,
                    first.unwrap_or("?")
                )),
            },
        }
    }
}

/// Every directory under terraform/ that holds .tf files.
fn modules() -> Vec<Module> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let mut has_tf = false;
        let mut entries: Vec<PathBuf> = fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.expect("dir entry").path())
            .collect();
        entries.sort();
        for path in entries {
            if path.is_dir() {
                if path.file_name().is_some_and(|n| n == ".terraform") {
                    continue;
                }
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "tf") {
                has_tf = true;
            }
        }
        if has_tf {
            out.push(dir.to_owned());
        }
    }
    let mut dirs = Vec::new();
    walk(&terraform_root(), &mut dirs);
    dirs.iter().map(|d| Module::load(d)).collect()
}

fn root_module() -> Module {
    Module::load(&terraform_root())
}

fn example_module() -> Module {
    Module::load(&terraform_root().join("examples/ec2"))
}

fn string_attr(body: &Body, key: &str) -> Option<String> {
    match attr(body, key) {
        Some(Expression::String(s)) => Some(s.clone()),
        _ => None,
    }
}

#[test]
fn every_module_parses_and_has_the_standard_layout() {
    let modules = modules();
    let dirs: Vec<String> = modules
        .iter()
        .map(|m| {
            m.dir
                .strip_prefix(terraform_root())
                .unwrap_or(&m.dir)
                .display()
                .to_string()
        })
        .collect();
    assert!(dirs.contains(&String::new()), "the root module: {dirs:?}");
    assert!(
        dirs.contains(&"examples/ec2".to_owned()),
        "the EC2 example: {dirs:?}"
    );
    for module in &modules {
        for file in ["main.tf", "variables.tf", "outputs.tf", "versions.tf"] {
            assert!(
                module.dir.join(file).is_file(),
                "{}: {file} missing",
                module.dir.display()
            );
        }
        let terraform_blocks: Vec<&Block> = module
            .files
            .iter()
            .flat_map(|(_, body)| blocks(body, "terraform"))
            .collect();
        assert_eq!(
            terraform_blocks.len(),
            1,
            "{}: one terraform block",
            module.dir.display()
        );
        let required = terraform_blocks[0]
            .body
            .blocks()
            .find(|b| b.identifier.as_str() == "required_providers")
            .unwrap_or_else(|| panic!("{}: required_providers", module.dir.display()));
        let aws = attr(&required.body, "aws").expect("the aws provider is pinned");
        let Expression::Object(aws) = aws else {
            panic!("required_providers.aws must be an object");
        };
        let has_version = aws.keys().any(|k| match k {
            ObjectKey::Identifier(id) => id.as_str() == "version",
            _ => false,
        });
        assert!(
            has_version,
            "{}: aws provider version constraint",
            module.dir.display()
        );
    }
    assert!(
        terraform_root().join("README.md").is_file(),
        "terraform/README.md"
    );
}

#[test]
fn variables_are_typed_documented_and_used() {
    for module in modules() {
        let used: BTreeSet<String> = module
            .collect()
            .refs
            .iter()
            .filter(|r| r.root == "var")
            .filter_map(|r| r.attrs.first().cloned())
            .collect();
        for (name, block) in &module.variables {
            let at = format!("{}: variable {name}", module.dir.display());
            let description = string_attr(&block.body, "description")
                .unwrap_or_else(|| panic!("{at}: no description"));
            assert!(
                description.len() >= 20,
                "{at}: description too short: {description:?}"
            );
            assert!(attr(&block.body, "type").is_some(), "{at}: no type");
            assert!(used.contains(name), "{at}: declared but never used");
            for validation in blocks(&block.body, "validation") {
                assert!(
                    string_attr(&validation.body, "error_message").is_some(),
                    "{at}: validation without error_message"
                );
            }
        }
        for (name, block) in &module.outputs {
            let at = format!("{}: output {name}", module.dir.display());
            assert!(
                string_attr(&block.body, "description").is_some(),
                "{at}: no description"
            );
            assert!(attr(&block.body, "value").is_some(), "{at}: no value");
        }
    }
}

#[test]
fn every_reference_resolves() {
    let mut problems = Vec::new();
    let mut checked = 0;
    for module in modules() {
        let collector = module.collect();
        for r in &collector.refs {
            checked += 1;
            if let Some(problem) = module.resolve(r) {
                problems.push(problem);
            }
        }
        // Outputs must reference something declared (not be constants).
        for (name, block) in &module.outputs {
            let mut c = Collector::default();
            c.body(&block.body, &mut Vec::new(), &format!("output.{name}"));
            assert!(!c.refs.is_empty(), "output {name} references nothing");
        }
    }
    assert!(checked > 50, "suspiciously few references found: {checked}");
    assert!(
        problems.is_empty(),
        "unresolved references:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_reference_checker_finds_broken_references() {
    // The checks above are only worth something if the checker really rejects bad code.
    let module = root_module();
    let bad = r#"
        output "broken" {
          value = [var.nope, local.nope, aws_wafv2_ip_set.nope.arn, data.aws_x.y.id, module.m.o,
                   undefined_name, [for s in local.ip_sets : s.arn]]
        }
    "#;
    let body: Body = hcl::parse(bad).expect("parses");
    let mut c = Collector::default();
    c.body(&body, &mut Vec::new(), "bad");
    let problems: Vec<String> = c.refs.iter().filter_map(|r| module.resolve(r)).collect();
    assert_eq!(problems.len(), 6, "{problems:#?}");
    // `s` is bound by the for expression; local.ip_sets exists.
    assert!(
        problems.iter().all(|p| !p.contains("ip_sets")),
        "{problems:#?}"
    );
}

#[test]
fn module_calls_pass_exactly_the_child_variables() {
    let meta = [
        "source",
        "version",
        "providers",
        "count",
        "for_each",
        "depends_on",
    ];
    let example = example_module();
    assert!(!example.modules.is_empty(), "the example calls the module");
    for (name, call) in &example.modules {
        let child = example.child(call);
        let passed: BTreeSet<String> = call
            .body
            .attributes()
            .map(|a| a.key.to_string())
            .filter(|k| !meta.contains(&k.as_str()))
            .collect();
        for arg in &passed {
            assert!(
                child.variables.contains_key(arg),
                "module {name}: argument {arg} is not a variable of the child module"
            );
        }
        for (var, block) in &child.variables {
            if attr(&block.body, "default").is_none() {
                assert!(
                    passed.contains(var),
                    "module {name}: required variable {var} not passed"
                );
            }
        }
    }
}

#[test]
fn ip_sets_leave_addresses_to_the_blocker() {
    let module = root_module();
    let sets: Vec<_> = module
        .resources
        .iter()
        .filter(|((t, _), _)| t == "aws_wafv2_ip_set")
        .collect();
    assert_eq!(sets.len(), 2, "an IPv4 and an IPv6 IP set resource");
    let mut versions = BTreeSet::new();
    for ((_, name), block) in sets {
        let lifecycle = blocks(&block.body, "lifecycle")
            .next()
            .unwrap_or_else(|| panic!("aws_wafv2_ip_set.{name}: no lifecycle block"));
        let ignored = match attr(&lifecycle.body, "ignore_changes") {
            Some(Expression::Array(items)) => items.clone(),
            other => {
                panic!("aws_wafv2_ip_set.{name}: ignore_changes must be a list, got {other:?}")
            }
        };
        assert!(
            ignored
                .iter()
                .any(|e| matches!(e, Expression::Variable(v) if v.as_str() == "addresses")),
            "aws_wafv2_ip_set.{name}: lifecycle.ignore_changes must contain addresses"
        );
        assert!(
            attr(&block.body, "count").is_some(),
            "aws_wafv2_ip_set.{name}: N sets through count"
        );
        let scope = attr(&block.body, "scope");
        assert!(
            matches!(scope, Some(Expression::Traversal(_))),
            "aws_wafv2_ip_set.{name}: scope comes from var.scope"
        );
        versions.insert(string_attr(&block.body, "ip_address_version").unwrap_or_default());
    }
    assert_eq!(
        versions,
        BTreeSet::from(["IPV4".to_owned(), "IPV6".to_owned()])
    );
}

/// Asserts that no IAM statement in the module uses a wildcard or a negation.
fn assert_no_wildcards(module: &Module) -> usize {
    fn statements(body: &Body, out: &mut Vec<Body>) {
        for block in body.blocks() {
            match block.identifier.as_str() {
                "statement" => out.push(block.body.clone()),
                "dynamic"
                    if block
                        .labels
                        .first()
                        .is_some_and(|l| l.as_str() == "statement") =>
                {
                    for content in block.body.blocks() {
                        out.push(content.body.clone());
                    }
                }
                _ => {}
            }
        }
    }
    let mut count = 0;
    for ((kind, name), block) in &module.data {
        if kind != "aws_iam_policy_document" {
            continue;
        }
        let mut found = Vec::new();
        statements(&block.body, &mut found);
        assert!(!found.is_empty(), "data.{kind}.{name}: no statement");
        for statement in found {
            count += 1;
            let at = format!("{}: data.{kind}.{name}", module.dir.display());
            for forbidden in ["not_actions", "not_resources", "not_principals"] {
                assert!(
                    attr(&statement, forbidden).is_none(),
                    "{at}: {forbidden} is not allowed"
                );
            }
            assert_eq!(
                string_attr(&statement, "effect").as_deref(),
                Some("Allow"),
                "{at}"
            );
            let actions = match attr(&statement, "actions") {
                Some(Expression::Array(items)) => items.clone(),
                other => panic!("{at}: actions must be a literal list, got {other:?}"),
            };
            assert!(!actions.is_empty(), "{at}: empty actions");
            for action in actions {
                let Expression::String(action) = action else {
                    panic!("{at}: every action must be a literal string, got {action:?}");
                };
                assert!(
                    !action.contains('*') && !action.contains('?'),
                    "{at}: wildcard action {action}"
                );
                let (service, call) = action.split_once(':').unwrap_or_default();
                assert!(
                    !service.is_empty() && !call.is_empty(),
                    "{at}: bad action {action}"
                );
            }
            // Resources and principals: every literal inside the expression, however computed.
            for key in ["resources"] {
                if let Some(expr) = attr(&statement, key) {
                    let mut c = Collector::default();
                    c.expr(expr, &mut Vec::new(), &at);
                    assert!(
                        !c.refs.is_empty() || !c.literals.is_empty(),
                        "{at}: {key} is empty"
                    );
                    for literal in &c.literals {
                        assert!(!literal.contains('*'), "{at}: wildcard in {key}: {literal}");
                    }
                }
            }
            if attr(&statement, "resources").is_none() {
                // Only trust policies (with principals) may omit resources.
                assert!(
                    statement
                        .blocks()
                        .any(|b| b.identifier.as_str() == "principals"),
                    "{at}: a permission statement without resources means every resource"
                );
            }
            for principals in blocks(&statement, "principals") {
                let mut c = Collector::default();
                c.body(&principals.body, &mut Vec::new(), &at);
                for literal in &c.literals {
                    assert!(!literal.contains('*'), "{at}: wildcard principal {literal}");
                }
            }
        }
    }
    // Every policy attached anywhere is one of the documents checked above: no inline JSON that
    // would escape the check, and no managed policies (AWSWAFFullAccess and friends).
    for ((kind, name), block) in &module.resources {
        assert!(
            kind != "aws_iam_role_policy_attachment" && kind != "aws_iam_policy_attachment",
            "{kind}.{name}: attach no managed policy; inline least-privilege documents only"
        );
        assert!(
            attr(&block.body, "managed_policy_arns").is_none(),
            "{kind}.{name}: no managed_policy_arns"
        );
        for key in ["policy", "assume_role_policy"] {
            let Some(expr) = attr(&block.body, key) else {
                continue;
            };
            let mut c = Collector::default();
            c.expr(expr, &mut Vec::new(), key);
            assert!(
                c.literals.is_empty()
                    && !c.refs.is_empty()
                    && c.refs.iter().all(|r| {
                        r.root == "data"
                            && r.attrs.first().map(String::as_str)
                                == Some("aws_iam_policy_document")
                            && r.attrs.last().map(String::as_str) == Some("json")
                    }),
                "{kind}.{name}.{key} must be data.aws_iam_policy_document.<name>[...].json"
            );
        }
    }
    count
}

#[test]
fn iam_policies_have_no_wildcards() {
    let mut statements = 0;
    for module in modules() {
        statements += assert_no_wildcards(&module);
    }
    assert!(
        statements >= 4,
        "expected the trust, blocker and secrets statements: {statements}"
    );
}

/// Every resource a local (transitively) refers to, as `type.name`, plus the literals it holds.
fn expand_local(module: &Module, name: &str, seen: &mut BTreeSet<String>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    if !seen.insert(name.to_owned()) {
        return out;
    }
    let expr = module
        .locals
        .get(name)
        .unwrap_or_else(|| panic!("local.{name} is not declared"));
    let mut c = Collector::default();
    c.expr(expr, &mut Vec::new(), name);
    for r in c.refs {
        match r.root.as_str() {
            "local" => {
                let inner = r.attrs.first().expect("local.<name>");
                out.extend(expand_local(module, inner, seen));
            }
            "var" => {
                out.insert(format!("var.{}", r.attrs.join(".")));
            }
            root => {
                out.insert(format!(
                    "{root}.{}",
                    r.attrs.first().map(String::as_str).unwrap_or("")
                ));
            }
        }
    }
    out
}

#[test]
fn blocker_may_only_get_and_update_its_own_ip_sets() {
    let module = root_module();
    let policy = module
        .data
        .get(&("aws_iam_policy_document".to_owned(), "blocker".to_owned()))
        .expect("data.aws_iam_policy_document.blocker");
    let statements: Vec<&Block> = blocks(&policy.body, "statement").collect();
    assert_eq!(statements.len(), 1, "one statement");
    let statement = &statements[0].body;
    let actions: BTreeSet<String> = match attr(statement, "actions") {
        Some(Expression::Array(items)) => items
            .iter()
            .map(|e| match e {
                Expression::String(s) => s.clone(),
                other => panic!("literal actions only: {other:?}"),
            })
            .collect(),
        other => panic!("actions: {other:?}"),
    };
    assert_eq!(
        actions,
        BTreeSet::from(["wafv2:GetIPSet".to_owned(), "wafv2:UpdateIPSet".to_owned()])
    );
    // resources = local.ip_set_arns, which derives from the two IP set resources only.
    let resources = attr(statement, "resources").expect("resources");
    let mut c = Collector::default();
    c.expr(resources, &mut Vec::new(), "resources");
    assert!(c.literals.is_empty(), "no literal ARNs: {:?}", c.literals);
    let mut sources = BTreeSet::new();
    for r in &c.refs {
        assert_eq!(r.root, "local", "resources come from a local: {r:?}");
        sources.extend(expand_local(&module, &r.attrs[0], &mut BTreeSet::new()));
    }
    let resources: BTreeSet<&String> = sources.iter().filter(|s| !s.starts_with("var.")).collect();
    let expected = ["aws_wafv2_ip_set.ipv4", "aws_wafv2_ip_set.ipv6"];
    assert_eq!(
        resources,
        expected
            .iter()
            .map(|s| s.to_string())
            .collect::<BTreeSet<_>>()
            .iter()
            .collect(),
        "the policy's resources must be exactly the module's IP sets"
    );
    // The role's inline policy is that document, and the role is trusted by EC2 and/or IRSA only.
    let role_policy = module
        .resources
        .get(&("aws_iam_role_policy".to_owned(), "blocker".to_owned()))
        .expect("aws_iam_role_policy.blocker");
    let mut c = Collector::default();
    c.body(
        &role_policy.body,
        &mut Vec::new(),
        "aws_iam_role_policy.blocker",
    );
    assert!(
        c.refs
            .iter()
            .any(|r| r.root == "data" && r.attrs[..2] == ["aws_iam_policy_document", "blocker"]),
        "the role policy is data.aws_iam_policy_document.blocker"
    );
}

#[test]
fn irsa_trust_is_scoped_to_one_service_account() {
    let module = root_module();
    let trust = module
        .data
        .get(&(
            "aws_iam_policy_document".to_owned(),
            "assume_role".to_owned(),
        ))
        .expect("data.aws_iam_policy_document.assume_role");
    let mut web_identity = None;
    for dynamic in blocks(&trust.body, "dynamic") {
        for content in dynamic.body.blocks() {
            if let Some(Expression::Array(actions)) = attr(&content.body, "actions")
                && actions.contains(&Expression::String("sts:AssumeRoleWithWebIdentity".into()))
            {
                web_identity = Some(content.body.clone());
            }
        }
    }
    let statement = web_identity.expect("an sts:AssumeRoleWithWebIdentity statement");
    let conditions: Vec<(String, String)> = blocks(&statement, "condition")
        .map(|c| {
            let test = string_attr(&c.body, "test").unwrap_or_default();
            let mut collector = Collector::default();
            collector.expr(
                attr(&c.body, "variable").expect("variable"),
                &mut Vec::new(),
                "cond",
            );
            (test, collector.literals.concat())
        })
        .collect();
    for claim in [":sub", ":aud"] {
        assert!(
            conditions
                .iter()
                .any(|(test, var)| test == "StringEquals" && var.ends_with(claim)),
            "IRSA trust needs StringEquals on the {claim} claim: {conditions:?}"
        );
    }
}

#[test]
fn ec2_example_requires_imdsv2_and_uses_the_profile() {
    let example = example_module();
    let instance = example
        .resources
        .iter()
        .find(|((t, _), _)| t == "aws_instance")
        .map(|(_, b)| b)
        .expect("an aws_instance");
    let metadata = blocks(&instance.body, "metadata_options")
        .next()
        .expect("metadata_options");
    assert_eq!(
        string_attr(&metadata.body, "http_tokens").as_deref(),
        Some("required")
    );
    assert_eq!(
        string_attr(&metadata.body, "http_endpoint").as_deref(),
        Some("enabled")
    );
    assert!(
        matches!(attr(&metadata.body, "http_put_response_hop_limit"),
            Some(Expression::Number(n)) if n.as_u64() == Some(1)),
        "hop limit 1 keeps containers away from the instance credentials"
    );
    let mut c = Collector::default();
    c.expr(
        attr(&instance.body, "iam_instance_profile").expect("iam_instance_profile"),
        &mut Vec::new(),
        "iam_instance_profile",
    );
    assert!(
        c.refs
            .iter()
            .any(|r| r.root == "module" && r.attrs == ["palisade", "instance_profile_name"]),
        "the instance uses the module's instance profile: {:?}",
        c.refs
    );
    let root = blocks(&instance.body, "root_block_device")
        .next()
        .expect("root_block_device");
    assert_eq!(attr(&root.body, "encrypted"), Some(&Expression::Bool(true)));
}

/// Root names a template interpolates, minus its own loop variables.
fn template_variables(template: &Template) -> BTreeSet<String> {
    let mut c = Collector::default();
    c.template(template, &mut Vec::new(), "template");
    c.refs.into_iter().map(|r| r.root).collect()
}

#[test]
fn user_data_template_gets_exactly_its_variables() {
    let example = example_module();
    let collector = example.collect();
    assert_eq!(collector.templatefiles.len(), 1, "one templatefile() call");
    let (path, passed) = &collector.templatefiles[0];
    // "${path.module}/user_data.sh.tftpl"
    let Expression::TemplateExpr(path) = path else {
        panic!("templatefile path must be \"${{path.module}}/...\", got {path:?}");
    };
    let relative = path
        .to_string()
        .strip_prefix("${path.module}/")
        .map(str::to_owned)
        .expect("the template path is relative to path.module");
    let file = example.dir.join(relative);
    let text = fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let template: Template = text
        .parse()
        .unwrap_or_else(|e| panic!("{}: not a valid template: {e}", file.display()));
    let used = template_variables(&template);
    assert_eq!(
        &used, passed,
        "the template must use exactly the variables passed to templatefile()"
    );
    assert!(
        text.starts_with("#!/bin/bash\n"),
        "user data is a bash script"
    );
    assert!(
        text.contains("set -euo pipefail"),
        "user data stops at the first error"
    );
    assert!(
        text.contains("sha256sum --check"),
        "the package is verified before install"
    );
}

#[test]
fn readme_documents_every_variable_and_output() {
    let module = root_module();
    let readme = fs::read_to_string(terraform_root().join("README.md")).expect("README.md");
    for name in module.variables.keys().chain(module.outputs.keys()) {
        assert!(
            readme.contains(&format!("`{name}`")),
            "terraform/README.md does not document `{name}`"
        );
    }
}

#[test]
fn terraform_fmt_is_clean() {
    let out = Command::new("terraform")
        .args(["fmt", "-check", "-recursive", "-diff"])
        .arg(terraform_root())
        .output();
    match out {
        Err(err) => {
            println!("SKIPPED: terraform is not installed ({err}); the HCL checks above still ran")
        }
        Ok(out) => assert!(
            out.status.success(),
            "terraform fmt -check found unformatted files:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// Dotted key paths of a TOML table (tables recursed into).
fn toml_key_paths(table: &toml::Table, prefix: &str, out: &mut BTreeSet<String>) {
    for (key, value) in table {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        if let toml::Value::Table(inner) = value {
            toml_key_paths(inner, &path, out);
        }
        out.insert(path);
    }
}

/// Key paths the example configuration documents, including optional fields written as
/// comments (`# creds_file = "..."`) under their table header.
fn documented_blocker_keys() -> BTreeSet<String> {
    let path = workspace_root().join("config/blocker.example.toml");
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let table: toml::Table = text
        .parse()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut keys = BTreeSet::new();
    toml_key_paths(&table, "", &mut keys);
    let mut section = String::new();
    for line in text.lines() {
        let uncommented = line.trim().trim_start_matches('#').trim();
        if let Some(header) = uncommented
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .filter(|h| !h.is_empty() && !h.contains(' '))
        {
            section = header.to_owned();
        } else if line.trim_start().starts_with('#')
            && let Some((key, _)) = uncommented.split_once('=')
            && !key.trim().is_empty()
            && key
                .trim()
                .chars()
                .all(|c| c.is_ascii_lowercase() || c == '_')
        {
            keys.insert(format!("{section}.{}", key.trim()));
        }
    }
    keys
}

/// Renders the EC2 user data with `terraform apply` on a root module that only calls
/// templatefile() (no provider, no network), as the real apply would render it.
fn render_user_data(terraform: &str, vars: &str) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let template = terraform_root().join("examples/ec2/user_data.sh.tftpl");
    let main = format!(
        "output \"rendered\" {{\n  value = templatefile({:?}, {vars})\n}}\n",
        template.display().to_string()
    );
    fs::write(dir.path().join("main.tf"), main).expect("write main.tf");
    let run = |args: &[&str]| {
        let out = Command::new(terraform)
            .args(args)
            .current_dir(dir.path())
            // No version check, no user CLI configuration: nothing leaves the machine.
            .env("CHECKPOINT_DISABLE", "1")
            .env("TF_CLI_CONFIG_FILE", "/dev/null")
            .env("TF_IN_AUTOMATION", "1")
            .output()
            .expect("run terraform");
        assert!(
            out.status.success(),
            "terraform {args:?} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    run(&["init", "-input=false", "-no-color"]);
    run(&["apply", "-auto-approve", "-input=false", "-no-color"]);
    run(&["output", "-raw", "rendered"])
}

/// The TOML document the user data writes to /etc/palisade/blocker.toml.
fn rendered_config(script: &str) -> toml::Table {
    let start = script
        .find("<<'TOML'\n")
        .map(|i| i + "<<'TOML'\n".len())
        .expect("the config heredoc");
    let end = script[start..]
        .find("\nTOML\n")
        .map(|i| start + i)
        .expect("the end of the config heredoc");
    script[start..end]
        .parse()
        .unwrap_or_else(|e| panic!("rendered blocker.toml does not parse: {e}"))
}

#[test]
fn user_data_renders_to_valid_bash_and_config() {
    let terraform = "terraform";
    if let Err(err) = Command::new(terraform).arg("version").output() {
        println!(
            "SKIPPED: terraform is not installed ({err}); the template checks above still ran"
        );
        return;
    }
    let arns = [
        "arn:aws:wafv2:eu-west-1:123456789012:regional/ipset/palisade-ipv4-01/a1b2",
        "arn:aws:wafv2:eu-west-1:123456789012:regional/ipset/palisade-ipv6-01/c3d4",
    ];
    let documented = documented_blocker_keys();
    for (creds, token) in [("/palisade/nats-creds", "/palisade/admin-token"), ("", "")] {
        let vars = format!(
            "{{ region = \"eu-west-1\", package_url = \"https://releases.example.com/p.deb\", \
             package_sha256 = \"{sha}\", nats_url = \"tls://nats.internal:4222\", \
             nats_creds_parameter = \"{creds}\", admin_token_parameter = \"{token}\", \
             ipset_arns = [\"{a}\", \"{b}\"] }}",
            sha = "0".repeat(64),
            a = arns[0],
            b = arns[1],
        );
        let script = render_user_data(terraform, &vars);
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("user_data.sh");
        fs::write(&path, &script).expect("write script");
        let syntax = Command::new("bash")
            .arg("-n")
            .arg(&path)
            .output()
            .expect("bash -n");
        assert!(
            syntax.status.success(),
            "rendered user data is not valid bash:\n{}\n{script}",
            String::from_utf8_lossy(&syntax.stderr)
        );

        let config = rendered_config(&script);
        let mut used = BTreeSet::new();
        toml_key_paths(&config, "", &mut used);
        let unknown: Vec<&String> = used.difference(&documented).collect();
        assert!(
            unknown.is_empty(),
            "blocker.toml fields the blocker does not have: {unknown:?}"
        );
        let written: Vec<&str> = config["provider"]["aws"]["ipset_arns"]
            .as_array()
            .expect("ipset_arns")
            .iter()
            .filter_map(|v| v.as_str())
            .collect();
        assert_eq!(written, arns, "the ARNs reach the config in order");
        assert_eq!(config["provider"]["kind"].as_str(), Some("aws"));
        assert_eq!(
            config["nats"]["url"].as_str(),
            Some("tls://nats.internal:4222")
        );

        let with_secrets = !creds.is_empty();
        assert_eq!(
            config["nats"].get("creds_file").is_some(),
            with_secrets,
            "creds_file only when a creds parameter is given"
        );
        assert_eq!(script.contains("LoadCredential=nats.creds:"), with_secrets);
        assert_eq!(script.contains("PALISADE_ADMIN_TOKEN="), with_secrets);
        assert!(
            !script.contains("${"),
            "an unrendered interpolation is left"
        );
    }
}

#[test]
fn web_acl_and_rule_group_block_every_ip_set() {
    let module = root_module();
    for kind in ["aws_wafv2_web_acl", "aws_wafv2_rule_group"] {
        let block = module
            .resources
            .get(&(kind.to_owned(), "this".to_owned()))
            .unwrap_or_else(|| panic!("{kind}.this"));
        let at = format!("{kind}.this");
        // Optional: created only when asked for.
        assert!(
            matches!(attr(&block.body, "count"), Some(Expression::Conditional(_))),
            "{at}: count = var.create_... ? 1 : 0"
        );
        let rules: Vec<&Block> = blocks(&block.body, "dynamic")
            .filter(|d| d.labels.first().is_some_and(|l| l.as_str() == "rule"))
            .collect();
        assert_eq!(rules.len(), 1, "{at}: one dynamic rule block");
        // One rule per IP set: for_each over local.ip_sets, which holds every set.
        let mut c = Collector::default();
        c.expr(
            attr(&rules[0].body, "for_each").expect("for_each"),
            &mut Vec::new(),
            &at,
        );
        assert!(
            c.refs
                .iter()
                .any(|r| r.root == "local" && r.attrs == ["ip_sets"]),
            "{at}: rules for_each = local.ip_sets"
        );
        let sets = expand_local(&module, "ip_sets", &mut BTreeSet::new());
        for family in ["aws_wafv2_ip_set.ipv4", "aws_wafv2_ip_set.ipv6"] {
            assert!(sets.contains(family), "{at}: local.ip_sets lacks {family}");
        }
        let content = rules[0]
            .body
            .blocks()
            .find(|b| b.identifier.as_str() == "content")
            .expect("content");
        let action = blocks(&content.body, "action").next().expect("action");
        assert!(
            blocks(&action.body, "block").next().is_some(),
            "{at}: the rule's action is block"
        );
        let statement = blocks(&content.body, "statement")
            .next()
            .expect("statement");
        let reference = blocks(&statement.body, "ip_set_reference_statement")
            .next()
            .expect("ip_set_reference_statement");
        // X-Forwarded-For matching exists and is driven by var.forwarded_ip.
        let forwarded = blocks(&reference.body, "dynamic")
            .find(|d| {
                d.labels
                    .first()
                    .is_some_and(|l| l.as_str() == "ip_set_forwarded_ip_config")
            })
            .unwrap_or_else(|| panic!("{at}: dynamic ip_set_forwarded_ip_config"));
        let mut c = Collector::default();
        c.expr(
            attr(&forwarded.body, "for_each").expect("for_each"),
            &mut Vec::new(),
            &at,
        );
        assert!(
            c.refs
                .iter()
                .any(|r| r.root == "var" && r.attrs == ["forwarded_ip"]),
            "{at}: forwarded IP matching follows var.forwarded_ip"
        );
    }
}
