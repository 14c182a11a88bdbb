//! The variables a template refers to, read from its syntax tree, so that
//! `validate` can reject `{{acount.name}}` or `{{event.data}}` in a
//! scheduled moment before any account is ever rendered.

use std::collections::BTreeSet;

use handlebars::template::{HelperTemplate, Parameter, Template, TemplateElement};

/// Root names (`account`, `contact`, `event`...) used at the top level of
/// a template, outside blocks that change the context (`each`, `with`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TemplateVars {
    pub roots: BTreeSet<String>,
}

impl TemplateVars {
    pub fn of(templates: &[&Template]) -> TemplateVars {
        let mut vars = TemplateVars::default();
        for t in templates {
            vars.walk(t);
        }
        vars
    }

    fn walk(&mut self, t: &Template) {
        for element in &t.elements {
            match element {
                TemplateElement::Expression(h) | TemplateElement::HtmlExpression(h) => {
                    self.helper(h, true)
                }
                TemplateElement::HelperBlock(h) => self.helper(h, false),
                _ => {}
            }
        }
    }

    fn helper(&mut self, h: &HelperTemplate, expression: bool) {
        // `{{account.name}}` parses as a helper-less expression whose name
        // is the path; `{{date account.renewal_at}}` as a helper with params.
        if expression && h.params.is_empty() && h.hash.is_empty() {
            self.param(&h.name);
        }
        for p in h.params.iter().chain(h.hash.values()) {
            self.param(p);
        }
        let name = match &h.name {
            Parameter::Name(n) => n.as_str(),
            _ => "",
        };
        // Inside `each` and `with` paths are relative to another context.
        if !matches!(name, "each" | "with")
            && let Some(t) = &h.template
        {
            self.walk(t);
        }
        if let Some(t) = &h.inverse {
            self.walk(t);
        }
    }

    fn param(&mut self, p: &Parameter) {
        match p {
            Parameter::Path(path) => {
                let raw = path_raw(path);
                let root = raw
                    .trim_start_matches("this.")
                    .split(['.', '['])
                    .next()
                    .unwrap_or("");
                if !root.is_empty()
                    && !root.starts_with('@')
                    && root != "this"
                    && !raw.starts_with("..")
                {
                    self.roots.insert(root.to_string());
                }
            }
            Parameter::Name(n) => {
                let root = n.split(['.', '[']).next().unwrap_or("");
                if !root.is_empty() && !root.starts_with('@') && root != "this" {
                    self.roots.insert(root.to_string());
                }
            }
            Parameter::Subexpression(s) => {
                for p in s.params().into_iter().flatten() {
                    self.param(p);
                }
            }
            _ => {}
        }
    }
}

fn path_raw(path: &handlebars::Path) -> String {
    match path {
        handlebars::Path::Relative((_, raw)) => raw.clone(),
        handlebars::Path::Local((_, _, raw)) => format!("@{raw}"),
    }
}
