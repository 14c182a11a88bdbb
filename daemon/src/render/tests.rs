//! Template behaviour: strictness everywhere, escaping per output kind.

use std::path::Path;

use serde_json::json;

use super::*;

fn load(files: &[(&str, &str)]) -> (Templates, Vec<Diagnostic>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    for (name, body) in files {
        let p = dir.path().join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, body).unwrap();
    }
    let (t, d) = Templates::load(dir.path());
    (t, d, dir)
}

fn ctx() -> Ctx {
    Ctx::new(raw())
}

fn raw() -> serde_json::Value {
    json!({
        "account": {"name": "Acme \"Rockets\"\nInc", "mrr": 5200, "renewal_at": "2027-01-05T00:00:00Z", "attributes": {}},
        "contact": {"name": "Ann", "email": "ann@acme.example"},
        "now": "2026-01-01T00:00:00Z",
    })
}

#[test]
fn a_missing_variable_fails_and_is_named() {
    let (t, d, _dir) = load(&[("hi.hbs", "---\nsubject: Hi\n---\nHello {{contact.nme}}\n")]);
    assert!(d.is_empty(), "{d:?}");
    let e = t.render_email("hi", &ctx()).unwrap_err();
    assert_eq!(e.template, "hi");
    assert!(
        e.message.contains("missing variable `contact.nme`"),
        "{}",
        e.message
    );
}

#[test]
fn a_null_is_missing_not_blank() {
    let (t, _, _dir) = load(&[("hi.hbs", "---\nsubject: Hi\n---\nHello {{contact.name}}\n")]);
    let mut c = raw();
    c["contact"]["name"] = serde_json::Value::Null;
    let e = t.render_email("hi", &Ctx::new(c)).unwrap_err();
    assert!(
        e.message.contains("missing variable `contact.name`"),
        "{}",
        e.message
    );
    let mut ctx = ctx();
    ctx.set("contact", json!({"email": "x@y.io", "name": null}));
    assert!(t.render_email("hi", &ctx).is_err());
}

#[test]
fn a_missing_variable_inside_if_fails_instead_of_hiding_the_block() {
    let (t, _, _dir) = load(&[(
        "hi.hbs",
        "---\nsubject: Hi\n---\n{{#if account.attributes.vip}}VIP{{else}}regular{{/if}}\n",
    )]);
    let e = t.render_email("hi", &ctx()).unwrap_err();
    assert!(
        e.message.contains("account.attributes.vip"),
        "{}",
        e.message
    );
    let mut c = raw();
    c["account"]["attributes"]["vip"] = json!(false);
    assert_eq!(
        t.render_email("hi", &Ctx::new(c)).unwrap().text,
        "regular\n"
    );
    let (u, _, _d2) = load(&[(
        "u.hbs",
        "---\nsubject: Hi\n---\n{{#unless contact.missing}}x{{/unless}}",
    )]);
    assert!(u.render_email("u", &ctx()).is_err());
}

#[test]
fn the_subject_is_a_template_on_one_line_and_text_is_not_html_escaped() {
    let (t, d, _dir) = load(&[
        (
            "qbr.hbs",
            "---\nsubject: \"Your review, {{account.name}}\"\nreply_to: \"{{contact.email}}\"\n---\nDear {{contact.name}} & team of {{account.name}}\n",
        ),
        ("qbr.html.hbs", "<p>{{account.name}}</p>"),
    ]);
    assert!(d.is_empty(), "{d:?}");
    let m = t.render_email("qbr", &ctx()).unwrap();
    assert_eq!(m.subject, "Your review, Acme \"Rockets\" Inc");
    assert_eq!(m.text, "Dear Ann & team of Acme \"Rockets\"\nInc\n");
    assert_eq!(
        m.html.as_deref(),
        Some("<p>Acme &quot;Rockets&quot;\nInc</p>")
    );
    assert_eq!(m.reply_to.as_deref(), Some("ann@acme.example"));
}

#[test]
fn json_templates_escape_strings_and_must_render_valid_json() {
    let (t, d, _dir) = load(&[
        (
            "alert.json.hbs",
            "{\"text\": \"{{account.name}} pays {{account.mrr}}\", \"acct\": {{json account.attributes}}, \"mrr\": {{account.mrr}}}",
        ),
        ("broken.json.hbs", "{\"text\": {{account.name}}}"),
    ]);
    assert!(d.is_empty(), "{d:?}");
    let v = t.render_json("alert", &ctx()).unwrap();
    assert_eq!(
        v,
        json!({"text": "Acme \"Rockets\"\nInc pays 5200", "acct": {}, "mrr": 5200})
    );
    let e = t.render_json("broken", &ctx()).unwrap_err();
    assert!(e.message.contains("not valid JSON"), "{}", e.message);
}

#[test]
fn the_date_helper_formats_in_a_zone() {
    let (t, _, _dir) = load(&[(
        "d.hbs",
        "---\nsubject: x\n---\n{{date account.renewal_at \"%B %-d, %Y\"}} / {{date account.renewal_at \"%H:%M\" tz=\"America/New_York\"}}",
    )]);
    assert_eq!(
        t.render_email("d", &ctx()).unwrap().text,
        "January 5, 2027 / 19:00"
    );
}

#[test]
fn compile_errors_point_into_the_file() {
    let (_, d, dir) = load(&[(
        "bad.hbs",
        "---\nsubject: x\n---\nline one\n{{#if x}}never closed\n",
    )]);
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(d[0].file, dir.path().join("bad.hbs"));
    assert!(d[0].line >= 5, "{:?}", d[0]);
    let (_, d, _dir) = load(&[("nofront.hbs", "Hello\n")]);
    assert!(d[0].message.contains("front matter"), "{:?}", d[0]);
    let (_, d, _dir) = load(&[("orphan.html.hbs", "<p>x</p>")]);
    assert!(d[0].message.contains("without a text part"), "{:?}", d[0]);
    let (_, d, _dir) = load(&[("fm.hbs", "---\nsubjekt: x\n---\nbody")]);
    assert!(
        d[0].message
            .contains("missing key `subject` (found `subjekt`: did you mean `subject`?)"),
        "{:?}",
        d[0]
    );
    let (t, d, _dir) = load(&[(
        "extra.hbs",
        "---\nsubject: x\npreheader: Quarterly\n---\nbody",
    )]);
    assert!(
        d.is_empty() && t.has("extra", Kind::Email),
        "other front matter keys are allowed: {d:?}"
    );
}

#[test]
fn variables_are_read_from_the_syntax_tree() {
    let (t, _, _dir) = load(&[(
        "v.hbs",
        "---\nsubject: \"{{account.name}}\"\n---\n{{#if event.data.x}}{{contact.name}}{{/if}}{{date now \"%Y\"}}{{#each account.contacts}}{{name}}{{/each}}",
    )]);
    let (_, vars) = t.vars("v", Kind::Email).unwrap();
    let roots: Vec<&str> = vars.roots.iter().map(String::as_str).collect();
    assert_eq!(roots, ["account", "contact", "event", "now"]);
    let _ = Path::new("");
}
