//! Jira Cloud (REST v3) as a Touchpilot connector
//! (https://developer.atlassian.com/cloud/jira/platform/rest/v3/).
//!
//! - Source: issues as `issue.created` / `issue.updated` events, found
//!   with `POST /rest/api/3/search/jql` on `updated` (JQL has minute
//!   precision, so each poll reads an overlap window again and event ids
//!   are the issue id and its `updated`), paged with `nextPageToken`. An
//!   issue belongs to the account named by a label (`account-ID`) or a
//!   custom field. Jira holds no accounts, only their events.
//! - Actions: `create_ticket`, `create_task`: an issue carrying the action
//!   key as a label, searched for before it is created (Jira has no
//!   idempotency key; its search is eventually consistent, so a retry
//!   within seconds of a lost answer could still duplicate).
//! - Webhook: admin webhooks with a secret, `X-Hub-Signature: sha256=HEX`
//!   of the body.

use serde::Deserialize;
use serde_json::{Map, Value, json};
use touchpilot_plugin::{
    Connector, Error, Host, HttpRequest, HttpResponse, caps, declare_connector, sign,
};

const ACTIONS: &str = "create_ticket, create_task";
const PAGE: u32 = 50;
const FIELDS: &[&str] = &[
    "summary",
    "status",
    "priority",
    "issuetype",
    "labels",
    "created",
    "updated",
];

/// The connector's `config:` in touchpilot.yaml.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `https://your-domain.atlassian.net`.
    pub base_url: String,
    /// Basic authentication: the Atlassian account's email and an API token.
    pub email: String,
    pub api_token: String,
    /// The project issues are created in (its key).
    pub project: Option<String>,
    /// Issue type of `create_ticket` (default `Task`; `create_task` is always `Task`).
    #[serde(default = "default_issue_type")]
    pub issue_type: String,
    /// JQL restricting what is read, such as `project = ACME` (default: all).
    pub jql: Option<String>,
    /// Labels `PREFIXid` name an issue's account (default `account-`).
    #[serde(default = "default_label_prefix")]
    pub account_label_prefix: String,
    /// A custom field holding the account id, instead of labels.
    pub account_field: Option<String>,
    /// Secret of the admin webhook; webhooks are refused without it.
    pub webhook_secret: Option<String>,
    /// The API user's time zone, in which JQL reads dates (default UTC).
    pub jql_timezone: Option<String>,
    /// RFC 3339 instant to start the first sync from (default: now minus the overlap).
    pub start_time: Option<String>,
    /// Seconds read again on each poll (default 120, at least 60).
    #[serde(default = "default_overlap")]
    pub overlap_seconds: i64,
}

fn default_issue_type() -> String {
    "Task".into()
}
fn default_label_prefix() -> String {
    "account-".into()
}
fn default_overlap() -> i64 {
    120
}

pub struct Jira {
    host: Host,
    c: Config,
    auth: String,
    tz: jiff::tz::TimeZone,
}

fn config_error(e: impl std::fmt::Display) -> Error {
    Error::fatal(format!("config: {e}"))
}

/// Jira's `2026-03-02T10:00:00.000+0000` and RFC 3339 alike.
pub fn jira_time(s: &str) -> Result<jiff::Timestamp, Error> {
    let fixed = match s.len().checked_sub(5).map(|i| s.split_at(i)) {
        Some((head, tail))
            if (tail.starts_with('+') || tail.starts_with('-')) && !tail.contains(':') =>
        {
            format!("{head}{}:{}", &tail[..3], &tail[3..])
        }
        _ => s.to_string(),
    };
    fixed
        .parse::<jiff::Timestamp>()
        .map_err(|e| Error::fatal(format!("bad time `{s}`: {e}")))
}

fn adf(text: &str) -> Value {
    json!({"type": "doc", "version": 1, "content": [
        {"type": "paragraph", "content": [{"type": "text", "text": if text.is_empty() { " " } else { text }}]}]})
}

impl Jira {
    pub fn new(host: Host, config: Value) -> Result<Jira, Error> {
        let c: Config = serde_json::from_value(config).map_err(config_error)?;
        if c.overlap_seconds < 60 {
            return Err(config_error(
                "`overlap_seconds` must be at least 60 (JQL dates have minute precision)",
            ));
        }
        let tz = match &c.jql_timezone {
            Some(name) => jiff::tz::TimeZone::get(name)
                .map_err(|e| config_error(format!("`jql_timezone`: {e}")))?,
            None => jiff::tz::TimeZone::UTC,
        };
        let auth = format!(
            "Basic {}",
            sign::base64(format!("{}:{}", c.email, c.api_token).as_bytes())
        );
        Ok(Jira { host, c, auth, tz })
    }

    fn post(&self, path: &str, body: &Value, what: &str) -> Result<HttpResponse, Error> {
        let base = self.c.base_url.trim_end_matches('/');
        let resp = self.host.http(
            &HttpRequest::new("POST", format!("{base}{path}"))
                .header("Authorization", &self.auth)
                .header("Accept", "application/json")
                .json(body),
        )?;
        if resp.status == 401 {
            return Err(Error::fatal(format!(
                "jira {what}: HTTP 401 {}: check `email` and `api_token`",
                touchpilot_plugin::wire::excerpt(&resp.body)
            )));
        }
        resp.check(&format!("jira {what}"))?;
        Ok(resp)
    }

    fn account_of(&self, issue: &Value) -> Option<String> {
        let fields = &issue["fields"];
        if let Some(f) = &self.c.account_field {
            return match &fields[f] {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                Value::Object(o) => o.get("value").and_then(Value::as_str).map(str::to_string),
                _ => None,
            };
        }
        fields["labels"]
            .as_array()?
            .iter()
            .filter_map(Value::as_str)
            .find_map(|l| l.strip_prefix(self.c.account_label_prefix.as_str()))
            .map(str::to_string)
    }

    /// `issue.created` once per issue, `issue.updated` per `updated`.
    pub fn issue_events(&self, issue: &Value) -> Result<Vec<Value>, Error> {
        let (Some(id), Some(account)) = (issue["id"].as_str(), self.account_of(issue)) else {
            return Ok(vec![]);
        };
        let f = &issue["fields"];
        let created = jira_time(f["created"].as_str().unwrap_or(""))?;
        let updated = f["updated"]
            .as_str()
            .map(jira_time)
            .transpose()?
            .unwrap_or(created);
        let mut data = Map::new();
        data.insert("issue_id".into(), json!(id));
        data.insert("key".into(), issue["key"].clone());
        data.insert("summary".into(), f["summary"].clone());
        data.insert("status".into(), f["status"]["name"].clone());
        data.insert(
            "priority".into(),
            json!(f["priority"]["name"].as_str().map(str::to_lowercase)),
        );
        data.insert("issue_type".into(), f["issuetype"]["name"].clone());
        data.insert("labels".into(), f["labels"].clone());
        let data = Value::Object(data);
        let mut out = vec![
            json!({"id": format!("jira:issue:{id}:created"), "account": account,
            "type": "issue.created", "at": created.to_string(), "data": data}),
        ];
        if updated != created {
            out.push(
                json!({"id": format!("jira:issue:{id}:{updated}"), "account": account,
                "type": "issue.updated", "at": updated.to_string(), "data": data}),
            );
        }
        Ok(out)
    }

    fn search(
        &self,
        jql: &str,
        fields: &[&str],
        token: Option<&str>,
        max: u32,
    ) -> Result<Value, Error> {
        let mut body = json!({"jql": jql, "fields": fields, "maxResults": max});
        if let Some(t) = token {
            body["nextPageToken"] = json!(t);
        }
        self.post("/rest/api/3/search/jql", &body, "search")?.json()
    }

    fn poll(&self, input: &Value) -> Result<Value, Error> {
        let now = jira_time(input["now"].as_str().unwrap_or("1970-01-01T00:00:00Z"))?;
        let overlap = jiff::SignedDuration::from_secs(self.c.overlap_seconds);
        let cursor = &input["cursor"];
        let since = match (cursor["since"].as_str(), self.c.start_time.as_deref()) {
            (Some(s), _) | (None, Some(s)) => jira_time(s)?,
            (None, None) => now
                .checked_sub(overlap)
                .map_err(|e| Error::fatal(e.to_string()))?,
        };
        let mut max_seen = cursor["max_seen"]
            .as_str()
            .map(jira_time)
            .transpose()?
            .unwrap_or(since);
        let literal = since
            .to_zoned(self.tz.clone())
            .strftime("%Y-%m-%d %H:%M")
            .to_string();
        let jql = match &self.c.jql {
            Some(filter) => format!("({filter}) AND updated >= \"{literal}\" ORDER BY updated ASC"),
            None => format!("updated >= \"{literal}\" ORDER BY updated ASC"),
        };
        let mut fields: Vec<&str> = FIELDS.to_vec();
        if let Some(f) = &self.c.account_field {
            fields.push(f);
        }
        let page = self.search(&jql, &fields, cursor["next"].as_str(), PAGE)?;
        let mut events = Vec::new();
        for issue in page["issues"].as_array().into_iter().flatten() {
            if let Some(u) = issue["fields"]["updated"].as_str() {
                max_seen = max_seen.max(jira_time(u)?);
            }
            events.extend(self.issue_events(issue)?);
        }
        let next = page["nextPageToken"]
            .as_str()
            .filter(|_| page["isLast"] != true);
        let cursor = match next {
            Some(t) => {
                json!({"since": since.to_string(), "next": t, "max_seen": max_seen.to_string()})
            }
            None => {
                let again = max_seen
                    .checked_sub(overlap)
                    .map_err(|e| Error::fatal(e.to_string()))?
                    .max(since);
                json!({"since": again.to_string(), "next": null, "max_seen": max_seen.to_string()})
            }
        };
        Ok(json!({"accounts": [], "events": events, "cursor": cursor, "more": next.is_some()}))
    }

    fn act(&self, input: &Value) -> Result<Value, Error> {
        let action = input["action"].as_str().unwrap_or("");
        let key = input["key"]
            .as_str()
            .ok_or_else(|| Error::fatal("act without a `key`"))?;
        let issue_type = match action {
            "create_ticket" => self.c.issue_type.clone(),
            "create_task" => "Task".to_string(),
            other => {
                return Err(Error::fatal(format!(
                    "jira has no action `{other}`; it offers {ACTIONS}"
                )));
            }
        };
        let content = &input["content"];
        let project = content["project"]
            .as_str()
            .or(self.c.project.as_deref())
            .ok_or_else(|| {
                Error::fatal("no project: set `project` in the config or the template")
            })?;
        let summary = content["summary"]
            .as_str()
            .or(content["subject"].as_str())
            .unwrap_or("");
        let found = self.search(&format!("labels = \"{key}\""), &["summary"], None, 1)?;
        if let Some(issue) = found["issues"].as_array().and_then(|a| a.first()) {
            return Ok(json!({"id": issue["key"], "created": false}));
        }
        let mut labels = vec![json!("touchpilot"), json!(key)];
        if self.c.account_field.is_none()
            && let Some(account) = input["account"]["id"].as_str()
        {
            labels.push(json!(format!("{}{account}", self.c.account_label_prefix)));
        }
        let mut fields = json!({
            "project": {"key": project},
            "issuetype": {"name": issue_type},
            "summary": summary,
            "description": adf(content["body"].as_str().unwrap_or("")),
            "labels": labels,
        });
        if let Some(p) = content["priority"].as_str() {
            fields["priority"] = json!({"name": p});
        }
        if let (Some(f), Some(account)) = (&self.c.account_field, input["account"]["id"].as_str()) {
            fields[f] = json!(account);
        }
        let created = self
            .post("/rest/api/3/issue", &json!({"fields": fields}), action)?
            .json()?;
        Ok(json!({"id": created["key"], "created": true}))
    }

    fn webhook(&self, input: &Value) -> Result<Value, Error> {
        let Some(secret) = &self.c.webhook_secret else {
            return Ok(
                json!({"rejected": "no `webhook_secret` is configured, so no webhook can be verified"}),
            );
        };
        let signature = input["headers"]
            .as_array()
            .into_iter()
            .flatten()
            .find_map(|h| {
                let (k, v) = (h[0].as_str()?, h[1].as_str()?);
                k.eq_ignore_ascii_case("x-hub-signature").then_some(v)
            });
        let Some(signature) = signature else {
            return Ok(json!({"rejected": "the request is not signed (X-Hub-Signature missing)"}));
        };
        let body = input["body"].as_str().unwrap_or("");
        let expected = format!(
            "sha256={}",
            sign::hex(&sign::hmac_sha256(secret.as_bytes(), &[body.as_bytes()]))
        );
        if !sign::constant_time_eq(expected.as_bytes(), signature.as_bytes()) {
            return Ok(json!({"rejected": "signature mismatch"}));
        }
        let payload: Value = serde_json::from_str(body)
            .map_err(|e| Error::fatal(format!("webhook body is not JSON: {e}")))?;
        match payload["webhookEvent"].as_str() {
            Some("jira:issue_created" | "jira:issue_updated") => {
                Ok(json!({"events": self.issue_events(&payload["issue"])?}))
            }
            _ => Ok(json!({"events": []})),
        }
    }
}

impl Connector for Jira {
    const NAME: &'static str = "jira";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const CAPABILITIES: u64 = caps::SOURCE | caps::ACTIONS | caps::WEBHOOK;

    fn open(host: Host, config: Value) -> Result<Self, Error> {
        Jira::new(host, config)
    }

    fn call(&self, op: &str, input: Value) -> Result<Value, Error> {
        match op {
            "check" => Ok(json!({})),
            "poll" => self.poll(&input),
            "act" => self.act(&input),
            "webhook" => self.webhook(&input),
            other => Err(Error::fatal(format!("unknown operation `{other}`"))),
        }
    }
}

declare_connector!(Jira);

#[cfg(test)]
mod tests {
    use super::*;

    fn jira(extra: Value) -> Result<Jira, Error> {
        let mut c = json!({"base_url": "https://acme.atlassian.net", "email": "a@acme.example", "api_token": "t", "project": "ACME"});
        c.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        Jira::new(Host::offline(), c)
    }

    #[test]
    fn an_issue_belongs_to_the_account_its_label_or_field_names() {
        let j = jira(json!({})).unwrap();
        let issue = json!({"id": "10001", "key": "ACME-1", "fields": {"summary": "Login broken", "labels": ["x", "account-509974"],
            "status": {"name": "In Progress"}, "priority": {"name": "High"}, "issuetype": {"name": "Bug"},
            "created": "2026-03-02T10:00:00.000+0000", "updated": "2026-03-02T11:30:00.000+0000"}});
        let ev = j.issue_events(&issue).unwrap();
        assert_eq!(ev.len(), 2);
        assert_eq!(ev[0]["account"], "509974");
        assert_eq!(ev[0]["id"], "jira:issue:10001:created");
        assert_eq!(ev[1]["id"], "jira:issue:10001:2026-03-02T11:30:00Z");
        assert_eq!(ev[1]["data"]["priority"], "high");
        let j = jira(json!({"account_field": "customfield_10042"})).unwrap();
        let mut other = issue.clone();
        other["fields"]["customfield_10042"] = json!("acc-7");
        assert_eq!(j.issue_events(&other).unwrap()[0]["account"], "acc-7");
        assert!(j.issue_events(&issue).unwrap().is_empty());
        assert!(jira(json!({"overlap_seconds": 5})).is_err());
        assert!(
            jira(json!({"jql_timezone": "Mars/Olympus"}))
                .err()
                .unwrap()
                .message
                .contains("jql_timezone")
        );
    }
}
