//! Templates: loading, checking and rendering handlebars templates.
//!
//! Owns the three registries (text without escaping, HTML with HTML
//! escaping, JSON with JSON-string escaping), the strict helpers and the
//! email front matter. Rendering is a pure function of a template and a
//! JSON context: it reads no files after `Templates::load`, knows no clock,
//! and never turns a missing variable into an empty string.

mod helpers;
mod vars;

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use handlebars::Handlebars;
use serde::Deserialize;

use crate::config::diag::{Diagnostic, Pos};
pub use vars::TemplateVars;

/// What kind of output a template produces, from its file name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// `NAME.hbs`: front matter with `subject`, then a plain-text body.
    Email,
    /// `NAME.json.hbs`: renders a JSON document.
    Json,
}

/// An email template's files and its front matter.
#[derive(Debug)]
struct EmailMeta {
    has_html: bool,
    /// Front matter `from` and `reply_to`, registered as `NAME#from` and `NAME#reply_to`.
    from: bool,
    reply_to: bool,
}

/// The front matter block of an email template. The contract asks for "at
/// least `subject`": other keys (a preheader, notes for editors) are kept
/// out of the way, not refused.
#[derive(Debug, Deserialize)]
struct FrontMatter {
    /// The subject line; itself a template.
    subject: Option<String>,
    /// Overrides the configured From for this template.
    from: Option<String>,
    /// A Reply-To header, such as the account owner's address.
    reply_to: Option<String>,
    /// Anything else, kept only to suggest `subject` for a near miss.
    #[serde(flatten)]
    other: BTreeMap<String, serde::de::IgnoredAny>,
}

/// A rendered email, ready for a transport.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RenderedEmail {
    pub subject: String,
    pub text: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub html: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
}

/// The data a template renders against. Built once per fired moment and
/// changed in place per recipient: handlebars would otherwise copy the
/// whole context for every render.
pub struct Ctx(handlebars::Context);

impl Ctx {
    pub fn new(mut data: serde_json::Value) -> Ctx {
        strip_nulls(&mut data);
        Ctx(handlebars::Context::from(data))
    }

    /// Sets one top-level variable.
    pub fn set(&mut self, key: &str, mut value: serde_json::Value) {
        strip_nulls(&mut value);
        if let serde_json::Value::Object(map) = self.0.data_mut() {
            if value.is_null() {
                map.remove(key);
            } else {
                map.insert(key.to_string(), value);
            }
        }
    }
}

/// Removes null members: a contact whose name is `null` has no name, and
/// `{{contact.name}}` must fail rather than print a blank.
fn strip_nulls(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(map) => {
            map.retain(|_, x| !x.is_null());
            map.values_mut().for_each(strip_nulls);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

/// Why a template could not be rendered: always names the template and,
/// for a missing variable, the variable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("template `{template}`: {message}")]
pub struct RenderError {
    pub template: String,
    pub message: String,
}

/// Every template of a configuration, compiled.
pub struct Templates {
    text: Handlebars<'static>,
    html: Handlebars<'static>,
    json: Handlebars<'static>,
    emails: BTreeMap<String, EmailMeta>,
    json_names: BTreeMap<String, ()>,
    vars: BTreeMap<(String, Kind), (PathBuf, TemplateVars)>,
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Templates")
            .field("emails", &self.emails.keys().collect::<Vec<_>>())
            .field("json", &self.json_names.keys().collect::<Vec<_>>())
            .finish()
    }
}

fn registry(escape: fn(&str) -> String) -> Handlebars<'static> {
    let mut hb = Handlebars::new();
    hb.set_strict_mode(true);
    hb.register_escape_fn(escape);
    helpers::register(&mut hb);
    hb
}

impl Templates {
    /// An empty set, for tests and for configurations without templates.
    pub fn empty() -> Templates {
        Templates {
            text: registry(handlebars::no_escape),
            html: registry(handlebars::html_escape),
            json: registry(helpers::json_string_escape),
            emails: BTreeMap::new(),
            json_names: BTreeMap::new(),
            vars: BTreeMap::new(),
        }
    }

    /// Loads every `*.hbs` below `dir`. Problems are collected, not fatal:
    /// a broken template is left out and reported.
    pub fn load(dir: &Path) -> (Templates, Vec<Diagnostic>) {
        let mut t = Templates::empty();
        let mut diags = Vec::new();
        let mut files = Vec::new();
        if let Err(e) = collect_files(dir, &mut files) {
            diags.push(Diagnostic::error(
                dir,
                Pos::START,
                format!("cannot read templates directory: {e}"),
            ));
            return (t, diags);
        }
        files.sort();
        for path in &files {
            let rel = path.strip_prefix(dir).unwrap_or(path);
            let rel = rel.to_string_lossy().replace('\\', "/");
            let Some(stem) = rel.strip_suffix(".hbs") else {
                continue;
            };
            let source = match std::fs::read_to_string(path) {
                Ok(s) => s,
                Err(e) => {
                    diags.push(Diagnostic::error(
                        path,
                        Pos::START,
                        format!("cannot read template: {e}"),
                    ));
                    continue;
                }
            };
            if let Some(name) = stem.strip_suffix(".json") {
                if let Some(d) = t.add_json(name, path, &source) {
                    diags.push(d);
                }
            } else if stem.ends_with(".html") {
                // Added with its email below, so that an HTML part without
                // a text template is reported once, by name.
                let name = stem.trim_end_matches(".html");
                if !files.iter().any(|p| p == &dir.join(format!("{name}.hbs"))) {
                    diags.push(Diagnostic::error(
                        path,
                        Pos::START,
                        format!("HTML part without a text part: add `{name}.hbs` with the subject and plain-text body"),
                    ));
                }
            } else {
                let html_path = dir.join(format!("{stem}.html.hbs"));
                let html = if files.contains(&html_path) {
                    match std::fs::read_to_string(&html_path) {
                        Ok(s) => Some((html_path, s)),
                        Err(e) => {
                            diags.push(Diagnostic::error(
                                &html_path,
                                Pos::START,
                                format!("cannot read template: {e}"),
                            ));
                            None
                        }
                    }
                } else {
                    None
                };
                diags.extend(t.add_email(stem, path, &source, html));
            }
        }
        (t, diags)
    }

    fn add_json(&mut self, name: &str, path: &Path, source: &str) -> Option<Diagnostic> {
        let tpl = match handlebars::Template::compile(source) {
            Ok(tpl) => tpl,
            Err(e) => return Some(compile_diag(path, 0, &e)),
        };
        self.vars.insert(
            (name.to_string(), Kind::Json),
            (path.to_path_buf(), TemplateVars::of(&[&tpl])),
        );
        self.json.register_template(name, tpl);
        self.json_names.insert(name.to_string(), ());
        None
    }

    fn add_email(
        &mut self,
        name: &str,
        path: &Path,
        source: &str,
        html: Option<(PathBuf, String)>,
    ) -> Vec<Diagnostic> {
        let mut diags = Vec::new();
        let (front, body, body_line) = match split_front_matter(source) {
            Ok(parts) => parts,
            Err(msg) => {
                diags.push(Diagnostic::error(path, Pos::START, msg));
                return diags;
            }
        };
        let meta: FrontMatter = match serde_saphyr::from_str(front) {
            Ok(m) => m,
            Err(e) => {
                let at = e
                    .location()
                    .map(|l| Pos::new(l.line() + 1, l.column()))
                    .unwrap_or(Pos::START);
                diags.push(Diagnostic::error(
                    path,
                    at,
                    format!(
                        "front matter: {}",
                        crate::config::parse::describe_yaml_error(&e)
                    ),
                ));
                return diags;
            }
        };
        let Some(subject_source) = &meta.subject else {
            let keys: Vec<&str> = meta.other.keys().map(String::as_str).collect();
            let hint = crate::config::diag::did_you_mean("subject", keys.iter().copied())
                .map(|k| format!(" (found `{k}`: did you mean `subject`?)"))
                .unwrap_or_default();
            diags.push(Diagnostic::error(
                path,
                Pos::new(2, 1),
                format!("front matter: missing key `subject`{hint}"),
            ));
            return diags;
        };
        let subject = match handlebars::Template::compile(subject_source) {
            Ok(t) => t,
            Err(e) => {
                diags.push(compile_diag(path, 1, &e));
                return diags;
            }
        };
        let text = match handlebars::Template::compile(body) {
            Ok(t) => t,
            Err(e) => {
                diags.push(compile_diag(path, body_line - 1, &e));
                return diags;
            }
        };
        let html_tpl = match &html {
            Some((html_path, src)) => match handlebars::Template::compile(src) {
                Ok(t) => Some(t),
                Err(e) => {
                    diags.push(compile_diag(html_path, 0, &e));
                    return diags;
                }
            },
            None => None,
        };
        let mut extra = [false, false];
        for (i, (suffix, source)) in [("from", &meta.from), ("reply_to", &meta.reply_to)]
            .into_iter()
            .enumerate()
        {
            let Some(source) = source else { continue };
            match handlebars::Template::compile(source) {
                Ok(t) => {
                    self.text.register_template(&format!("{name}#{suffix}"), t);
                    extra[i] = true;
                }
                Err(e) => {
                    diags.push(compile_diag(path, 1, &e));
                    return diags;
                }
            }
        }
        let mut all = vec![&subject, &text];
        all.extend(html_tpl.as_ref());
        self.vars.insert(
            (name.to_string(), Kind::Email),
            (path.to_path_buf(), TemplateVars::of(&all)),
        );
        self.text
            .register_template(&format!("{name}#subject"), subject);
        self.text.register_template(name, text);
        if let Some(t) = html_tpl {
            self.html.register_template(name, t);
        }
        self.emails.insert(
            name.to_string(),
            EmailMeta {
                has_html: html.is_some(),
                from: extra[0],
                reply_to: extra[1],
            },
        );
        diags
    }

    /// Whether a template of this kind exists.
    pub fn has(&self, name: &str, kind: Kind) -> bool {
        match kind {
            Kind::Email => self.emails.contains_key(name),
            Kind::Json => self.json_names.contains_key(name),
        }
    }

    /// The file a template came from and the variables it uses.
    pub fn vars(&self, name: &str, kind: Kind) -> Option<&(PathBuf, TemplateVars)> {
        self.vars.get(&(name.to_string(), kind))
    }

    /// Renders an email template: subject, text and (optional) HTML part.
    pub fn render_email(&self, name: &str, ctx: &Ctx) -> Result<RenderedEmail, RenderError> {
        let ctx = &ctx.0;
        let meta = self.emails.get(name).ok_or_else(|| RenderError {
            template: name.to_string(),
            message: "no such email template".to_string(),
        })?;
        let subject = guarded(name, || {
            self.text
                .render_with_context(&format!("{name}#subject"), ctx)
        })?;
        // A subject is one header line: folding it is the transport's job,
        // a newline from data must never start a new header.
        let subject = subject.split_whitespace().collect::<Vec<_>>().join(" ");
        let text = guarded(name, || self.text.render_with_context(name, ctx))?;
        let html = if meta.has_html {
            Some(guarded(name, || self.html.render_with_context(name, ctx))?)
        } else {
            None
        };
        let from = match meta.from {
            true => Some(guarded(name, || {
                self.text.render_with_context(&format!("{name}#from"), ctx)
            })?),
            false => None,
        };
        let reply_to = match meta.reply_to {
            true => Some(guarded(name, || {
                self.text
                    .render_with_context(&format!("{name}#reply_to"), ctx)
            })?),
            false => None,
        };
        Ok(RenderedEmail {
            subject,
            text,
            html,
            from,
            reply_to,
        })
    }

    /// Renders a JSON template and parses the result: a template whose
    /// output is not valid JSON is an error, never sent.
    pub fn render_json(&self, name: &str, ctx: &Ctx) -> Result<serde_json::Value, RenderError> {
        let ctx = &ctx.0;
        if !self.json_names.contains_key(name) {
            return Err(RenderError {
                template: name.to_string(),
                message: "no such JSON template".to_string(),
            });
        }
        let text = guarded(name, || self.json.render_with_context(name, ctx))?;
        serde_json::from_str(&text).map_err(|e| RenderError {
            template: name.to_string(),
            message: format!(
                "rendered output is not valid JSON: {e} (output: {})",
                abbreviate(&text)
            ),
        })
    }
}

/// Renders with panics caught: a helper bug must fail one action, not the daemon.
fn guarded(
    name: &str,
    f: impl FnOnce() -> Result<String, handlebars::RenderError>,
) -> Result<String, RenderError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(RenderError {
            template: name.to_string(),
            message: describe_render_error(&e),
        }),
        Err(_) => Err(RenderError {
            template: name.to_string(),
            message: "rendering panicked".to_string(),
        }),
    }
}

fn describe_render_error(e: &handlebars::RenderError) -> String {
    let at = match (e.line_no, e.column_no) {
        (Some(l), Some(c)) => format!(" (line {l}, column {c})"),
        _ => String::new(),
    };
    match e.reason() {
        handlebars::RenderErrorReason::MissingVariable(Some(path)) => {
            format!("missing variable `{path}`{at}")
        }
        handlebars::RenderErrorReason::MissingVariable(None) => format!("missing variable{at}"),
        other => format!("{other}{at}"),
    }
}

fn abbreviate(s: &str) -> String {
    let s = s.trim();
    if s.chars().count() <= 80 {
        s.to_string()
    } else {
        format!("{}...", s.chars().take(80).collect::<String>())
    }
}

fn compile_diag(path: &Path, line_offset: usize, e: &handlebars::TemplateError) -> Diagnostic {
    let (line, col) = e.pos().unwrap_or((1, 1));
    Diagnostic::error(
        path,
        Pos::new((line + line_offset) as u64, col as u64),
        format!("template does not compile: {}", e.reason()),
    )
}

/// Splits `---\nYAML\n---\nbody`. Returns the front matter, the body, and
/// the 1-based line on which the body starts.
fn split_front_matter(source: &str) -> Result<(&str, &str, usize), String> {
    let missing = || {
        "email template must start with a front matter block: `---`, `subject: ...`, `---`"
            .to_string()
    };
    let rest = source
        .strip_prefix("---\n")
        .or_else(|| source.strip_prefix("---\r\n"))
        .ok_or_else(missing)?;
    let mut offset = 0;
    for (i, line) in rest.split_inclusive('\n').enumerate() {
        if line.trim_end() == "---" {
            let front = &rest[..offset];
            let body = &rest[offset + line.len()..];
            return Ok((front, body, i + 3));
        }
        offset += line.len();
    }
    Err(missing())
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_files(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "hbs") {
            out.push(path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
