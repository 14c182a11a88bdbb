//! Salesforce (REST API) as a Touchpilot connector
//! (https://developer.salesforce.com/docs/platform/api-rest/guide).
//!
//! - Source: accounts by SOQL on `Account` and their tasks (`task.created`,
//!   `task.updated` events) by SOQL on `Task`, both ordered by
//!   `SystemModstamp` (every change, system ones included), read again
//!   over an overlap window and paged with `nextRecordsUrl`; each page's
//!   contacts and their roles (`AccountContactRole.Role`: `Champion`,
//!   `Executive Sponsor`) come in one composite request (one API call for
//!   both queries).
//! - Actions: `create_task` and `create_note` (a completed Task) are
//!   upserts by an External ID field on Task holding the action key
//!   (`PATCH /sobjects/Task/{key_field}/{key}`): a retry updates the task
//!   it created instead of creating another; `update_field` on Account.
//! - Tokens: OAuth refresh (`grant_type=refresh_token`) on
//!   `INVALID_SESSION_ID`; the answer's `instance_url` is where later
//!   calls go. Salesforce has no signed webhooks (outbound messages are
//!   SOAP, CDC is a gRPC stream), so this connector polls only.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::Deserialize;
use serde_json::{Map, Value, json};
use touchpilot_plugin::{
    Connector, Error, Host, HttpRequest, HttpResponse, caps, declare_connector, mapping,
};

const DEFAULT_MAPPING: &[(&str, &str)] = &[
    ("name", "Name"),
    ("owner.name", "Owner.Name"),
    ("owner.email", "Owner.Email"),
    ("owner.salesforce_id", "OwnerId"),
    ("attributes.industry", "Industry"),
    ("attributes.type", "Type"),
    ("attributes.salesforce_account_id", "Id"),
];
const ACTIONS: &str = "create_task, create_note, update_field";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuth {
    pub client_id: String,
    pub client_secret: String,
    pub refresh_token: String,
}

/// The connector's `config:` in touchpilot.yaml.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where API calls go until a token refresh says otherwise.
    pub instance_url: Option<String>,
    /// Default `https://login.salesforce.com`.
    pub login_url: Option<String>,
    /// Default `v66.0`.
    pub api_version: Option<String>,
    /// A current access token (refreshed with `oauth` when it expires).
    pub access_token: Option<String>,
    pub oauth: Option<OAuth>,
    /// The External ID field on Task that holds the action key.
    #[serde(default = "default_key_field")]
    pub key_field: String,
    /// RFC 3339 instant to start the first sync from (default: now minus the overlap).
    pub start_time: Option<String>,
    /// Seconds of changes read again on each poll (default 300).
    #[serde(default = "default_overlap")]
    pub overlap_seconds: i64,
    /// Days from the action to the task's `ActivityDate` without a `due`.
    #[serde(default = "default_due_days")]
    pub task_due_days: i64,
    /// `AccountContactRole.Role` → contact role (default: lower case,
    /// `executive sponsor` → `sponsor`).
    #[serde(default)]
    pub roles: BTreeMap<String, String>,
    /// Account field ← Account field (`Owner.Email`); see `touchpilot_plugin::mapping`.
    #[serde(default)]
    pub mapping: BTreeMap<String, Option<String>>,
}

fn default_key_field() -> String {
    "Touchpilot_Key__c".into()
}
fn default_overlap() -> i64 {
    300
}
fn default_due_days() -> i64 {
    3
}

struct Session {
    token: Option<String>,
    instance: Option<String>,
}

pub struct Salesforce {
    host: Host,
    c: Config,
    version: String,
    mapping: Vec<(String, String)>,
    session: Mutex<Session>,
}

fn config_error(e: impl std::fmt::Display) -> Error {
    Error::fatal(format!("config: {e}"))
}

/// Salesforce's `2013-05-20T20:49:32.000+0000` and RFC 3339 alike.
pub fn sf_time(s: &str) -> Result<jiff::Timestamp, Error> {
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

/// A SOQL DateTime literal (unquoted, UTC).
fn soql_time(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            b' ' => "+".into(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A SOQL string literal: quotes and backslashes escaped.
fn soql_string(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

impl Salesforce {
    pub fn new(host: Host, config: Value) -> Result<Salesforce, Error> {
        let c: Config = serde_json::from_value(config).map_err(config_error)?;
        if c.access_token.is_none() && c.oauth.is_none() {
            return Err(config_error(
                "give `access_token`, `oauth` (refresh token), or both",
            ));
        }
        if c.access_token.is_some() && c.instance_url.is_none() {
            return Err(config_error(
                "`instance_url` is required with `access_token`",
            ));
        }
        let version = c.api_version.clone().unwrap_or_else(|| "v66.0".into());
        let mapping = mapping::merged(DEFAULT_MAPPING, &c.mapping);
        let session = Session {
            token: c.access_token.clone(),
            instance: c
                .instance_url
                .clone()
                .map(|u| u.trim_end_matches('/').to_string()),
        };
        Ok(Salesforce {
            host,
            c,
            version,
            mapping,
            session: Mutex::new(session),
        })
    }

    fn refresh(&self) -> Result<(), Error> {
        let Some(o) = &self.c.oauth else {
            return Err(Error::fatal(
                "the session expired (INVALID_SESSION_ID) and there is no `oauth` to refresh it",
            ));
        };
        let login = self
            .c
            .login_url
            .as_deref()
            .unwrap_or("https://login.salesforce.com")
            .trim_end_matches('/');
        let mut req = HttpRequest::new("POST", format!("{login}/services/oauth2/token"))
            .header("Content-Type", "application/x-www-form-urlencoded");
        req.body = format!(
            "grant_type=refresh_token&client_id={}&client_secret={}&refresh_token={}",
            url_encode(&o.client_id),
            url_encode(&o.client_secret),
            url_encode(&o.refresh_token)
        );
        let resp = self.host.http(&req)?;
        if resp.status == 400 || resp.status == 401 {
            return Err(Error::fatal(format!(
                "token refresh refused (HTTP {}): {}; check `oauth`",
                resp.status,
                touchpilot_plugin::wire::excerpt(&resp.body)
            )));
        }
        let v = resp.check("salesforce token refresh")?.json()?;
        let mut s = self
            .session
            .lock()
            .map_err(|_| Error::fatal("session lock poisoned"))?;
        s.token = v["access_token"].as_str().map(str::to_string);
        if let Some(i) = v["instance_url"].as_str() {
            s.instance = Some(i.trim_end_matches('/').to_string());
        }
        Ok(())
    }

    fn current(&self) -> Result<(String, String), Error> {
        {
            let s = self
                .session
                .lock()
                .map_err(|_| Error::fatal("session lock poisoned"))?;
            if let (Some(t), Some(i)) = (&s.token, &s.instance) {
                return Ok((t.clone(), i.clone()));
            }
        }
        self.refresh()?;
        let s = self
            .session
            .lock()
            .map_err(|_| Error::fatal("session lock poisoned"))?;
        match (&s.token, &s.instance) {
            (Some(t), Some(i)) => Ok((t.clone(), i.clone())),
            _ => Err(Error::fatal(
                "token refresh gave no `access_token` or `instance_url`",
            )),
        }
    }

    /// A call to `{instance_url}{path}`, refreshing the session once.
    fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        what: &str,
    ) -> Result<HttpResponse, Error> {
        let build = |token: &str, instance: &str| {
            let mut r = HttpRequest::new(method, format!("{instance}{path}"))
                .header("Authorization", format!("Bearer {token}"))
                .header("Accept", "application/json");
            if let Some(b) = body {
                r = r.json(b);
            }
            r
        };
        let (token, instance) = self.current()?;
        let mut resp = self.host.http(&build(&token, &instance))?;
        if resp.status == 401 {
            self.refresh()?;
            let (token, instance) = self.current()?;
            resp = self.host.http(&build(&token, &instance))?;
        }
        if resp.status == 403 && resp.body.contains("REQUEST_LIMIT_EXCEEDED") {
            return Err(Error {
                message: format!(
                    "salesforce {what}: the org's daily API limit is reached (REQUEST_LIMIT_EXCEEDED)"
                ),
                retryable: true,
                retry_after: Some(3600),
            });
        }
        if resp.status == 300 {
            return Err(Error::fatal(format!(
                "salesforce {what}: the key matches several records (HTTP 300)"
            )));
        }
        resp.check(&format!("salesforce {what}"))?;
        Ok(resp)
    }

    fn query_path(&self, soql: &str) -> String {
        format!(
            "/services/data/{}/query?q={}",
            self.version,
            url_encode(soql)
        )
    }

    fn role(&self, role: &str) -> String {
        if let Some(r) = self.c.roles.get(role) {
            return r.clone();
        }
        match role.to_lowercase().as_str() {
            "executive sponsor" => "sponsor".into(),
            other => other.replace(' ', "_"),
        }
    }

    /// Contacts and roles of these accounts: one composite call.
    fn contacts(&self, ids: &[String]) -> Result<BTreeMap<String, Vec<Value>>, Error> {
        let mut out: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        if ids.is_empty() {
            return Ok(out);
        }
        let list = ids
            .iter()
            .map(|i| soql_string(i))
            .collect::<Vec<_>>()
            .join(",");
        let body = json!({"allOrNone": false, "compositeRequest": [
            {"method": "GET", "referenceId": "contacts", "url": self.query_path(&format!(
                "SELECT Id, AccountId, Email, FirstName, LastName FROM Contact WHERE AccountId IN ({list})"))},
            {"method": "GET", "referenceId": "roles", "url": self.query_path(&format!(
                "SELECT AccountId, ContactId, Role FROM AccountContactRole WHERE AccountId IN ({list})"))},
        ]});
        let path = format!("/services/data/{}/composite", self.version);
        let resp = self.send("POST", &path, Some(&body), "contacts")?.json()?;
        let part = |reference: &str| -> Result<Vec<Value>, Error> {
            let r = resp["compositeResponse"]
                .as_array()
                .and_then(|a| a.iter().find(|r| r["referenceId"] == reference))
                .ok_or_else(|| Error::fatal(format!("composite answer lacks `{reference}`")))?;
            let status = r["httpStatusCode"].as_u64().unwrap_or(0);
            if !(200..300).contains(&status) {
                return Err(Error::fatal(format!(
                    "composite `{reference}`: HTTP {status}: {}",
                    r["body"]
                )));
            }
            Ok(r["body"]["records"].as_array().cloned().unwrap_or_default())
        };
        let roles: BTreeMap<String, String> = part("roles")?
            .iter()
            .filter_map(|r| {
                Some((
                    r["ContactId"].as_str()?.to_string(),
                    self.role(r["Role"].as_str()?),
                ))
            })
            .collect();
        for c in part("contacts")? {
            let (Some(account), Some(email)) = (c["AccountId"].as_str(), c["Email"].as_str())
            else {
                continue;
            };
            let name = [c["FirstName"].as_str(), c["LastName"].as_str()]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(" ");
            let mut contact =
                json!({"email": email, "name": name, "salesforce_contact_id": c["Id"]});
            if let Some(role) = c["Id"].as_str().and_then(|id| roles.get(id)) {
                contact["role"] = json!(role);
            }
            out.entry(account.to_string()).or_default().push(contact);
        }
        Ok(out)
    }

    /// One batch of `SELECT {fields} FROM {object}` modified since the
    /// cursor part's bound (ordered by `SystemModstamp`), and the part's
    /// next value: `nextRecordsUrl` while there are more, then the last
    /// modification seen minus the overlap window.
    fn query_page(
        &self,
        object: &str,
        fields: &[&str],
        part: &Value,
        first: jiff::Timestamp,
    ) -> Result<(Vec<Value>, Value, bool), Error> {
        let overlap = jiff::SignedDuration::from_secs(self.c.overlap_seconds);
        let since = part["since"]
            .as_str()
            .map(sf_time)
            .transpose()?
            .unwrap_or(first);
        let mut max_seen = part["max_seen"]
            .as_str()
            .map(sf_time)
            .transpose()?
            .unwrap_or(since);
        let path = match part["next"].as_str() {
            Some(next) => next.to_string(),
            None => self.query_path(&format!(
                "SELECT {} FROM {object} WHERE SystemModstamp >= {} ORDER BY SystemModstamp ASC",
                fields.join(", "),
                soql_time(since)
            )),
        };
        let page = self
            .send("GET", &path, None, &format!("{object} query"))?
            .json()?;
        let records = page["records"].as_array().cloned().unwrap_or_default();
        for r in &records {
            if let Some(m) = r["SystemModstamp"].as_str() {
                max_seen = max_seen.max(sf_time(m)?);
            }
        }
        let next = page["nextRecordsUrl"]
            .as_str()
            .filter(|_| page["done"] == false);
        let part = match next {
            Some(n) => {
                json!({"since": since.to_string(), "next": n, "max_seen": max_seen.to_string(), "caught_up": false})
            }
            None => {
                let again = max_seen
                    .checked_sub(overlap)
                    .map_err(|e| Error::fatal(e.to_string()))?
                    .max(since);
                json!({"since": again.to_string(), "next": null, "max_seen": max_seen.to_string(), "caught_up": true})
            }
        };
        Ok((records, part, next.is_some()))
    }

    /// Events of an account's task: `task.created` once, `task.updated`
    /// per modification (with `status` and `closed`).
    fn task_events(task: &Value) -> Result<Vec<Value>, Error> {
        // Only tasks about an Account (key prefix 001) belong to one.
        let (Some(id), Some(account)) = (
            task["Id"].as_str(),
            task["WhatId"].as_str().filter(|w| w.starts_with("001")),
        ) else {
            return Ok(vec![]);
        };
        let created = sf_time(
            task["CreatedDate"]
                .as_str()
                .unwrap_or("1970-01-01T00:00:00Z"),
        )?;
        let modified = task["SystemModstamp"]
            .as_str()
            .map(sf_time)
            .transpose()?
            .unwrap_or(created);
        let data = json!({"task_id": id, "subject": task["Subject"], "status": task["Status"],
            "priority": task["Priority"], "due": task["ActivityDate"], "closed": task["IsClosed"]});
        let mut out = vec![
            json!({"id": format!("salesforce:task:{id}:created"), "account": account,
            "type": "task.created", "at": created.to_string(), "data": data}),
        ];
        if modified > created {
            out.push(
                json!({"id": format!("salesforce:task:{id}:{modified}"), "account": account,
                "type": "task.updated", "at": modified.to_string(), "data": data}),
            );
        }
        Ok(out)
    }

    /// One batch of accounts (with contacts and roles) and one of tasks.
    fn poll(&self, input: &Value) -> Result<Value, Error> {
        let now = sf_time(input["now"].as_str().unwrap_or("1970-01-01T00:00:00Z"))?;
        let overlap = jiff::SignedDuration::from_secs(self.c.overlap_seconds);
        let first = match self.c.start_time.as_deref() {
            Some(s) => sf_time(s)?,
            None => now
                .checked_sub(overlap)
                .map_err(|e| Error::fatal(e.to_string()))?,
        };
        let cursor = &input["cursor"];
        // Within a round (until `more` is false), a part that is caught up
        // waits for the other instead of re-reading its overlap window.
        let new_round = ["accounts", "tasks", "roles"]
            .iter()
            .all(|p| cursor[p]["caught_up"] != false);
        let waits = |part: &str| !new_round && cursor[part]["caught_up"] == true;

        let mut fields: Vec<&str> = vec!["Id", "SystemModstamp"];
        for (_, from) in &self.mapping {
            if !fields.contains(&from.as_str()) {
                fields.push(from);
            }
        }
        let (records, accounts_next, more_accounts) = if waits("accounts") {
            (vec![], cursor["accounts"].clone(), false)
        } else {
            self.query_page("Account", &fields, &cursor["accounts"], first)?
        };
        // A contact role that changed leaves its account's SystemModstamp
        // alone: such accounts are read again, so a new champion is seen.
        let (roles, roles_next, more_roles) = if waits("roles") {
            (vec![], cursor["roles"].clone(), false)
        } else {
            self.query_page(
                "AccountContactRole",
                &["Id", "SystemModstamp", "AccountId"],
                &cursor["roles"],
                first,
            )?
        };
        let mut records = records;
        let mut again: Vec<String> = roles
            .iter()
            .filter_map(|r| r["AccountId"].as_str().map(str::to_string))
            .filter(|id| !records.iter().any(|a| a["Id"] == id.as_str()))
            .collect();
        again.sort();
        again.dedup();
        if !again.is_empty() {
            let list = again
                .iter()
                .map(|i| soql_string(i))
                .collect::<Vec<_>>()
                .join(",");
            let path = self.query_path(&format!(
                "SELECT {} FROM Account WHERE Id IN ({list})",
                fields.join(", ")
            ));
            let page = self.send("GET", &path, None, "account query")?.json()?;
            records.extend(page["records"].as_array().cloned().unwrap_or_default());
        }
        let ids: Vec<String> = records
            .iter()
            .filter_map(|r| r["Id"].as_str().map(str::to_string))
            .collect();
        let mut contacts = self.contacts(&ids)?;
        let mut accounts = Vec::new();
        for r in &records {
            let Some(id) = r["Id"].as_str() else { continue };
            let mut a = Map::new();
            a.insert("id".into(), json!(id));
            mapping::apply(&self.mapping, r, &mut a);
            a.insert(
                "contacts".into(),
                Value::Array(contacts.remove(id).unwrap_or_default()),
            );
            accounts.push(Value::Object(a));
        }

        let task_fields = [
            "Id",
            "SystemModstamp",
            "WhatId",
            "Subject",
            "Status",
            "Priority",
            "ActivityDate",
            "IsClosed",
            "CreatedDate",
        ];
        let (tasks, tasks_next, more_tasks) = if waits("tasks") {
            (vec![], cursor["tasks"].clone(), false)
        } else {
            self.query_page("Task", &task_fields, &cursor["tasks"], first)?
        };
        let mut events = Vec::new();
        for t in &tasks {
            events.extend(Self::task_events(t)?);
        }
        Ok(json!({
            "accounts": accounts,
            "events": events,
            "cursor": {"accounts": accounts_next, "tasks": tasks_next, "roles": roles_next},
            "more": more_accounts || more_tasks || more_roles,
        }))
    }

    fn act(&self, input: &Value) -> Result<Value, Error> {
        let action = input["action"].as_str().unwrap_or("");
        let key = input["key"]
            .as_str()
            .ok_or_else(|| Error::fatal("act without a `key`"))?;
        let content = &input["content"];
        let account = &input["account"];
        let sf_id = mapping::get(account, "attributes.salesforce_account_id")
            .or_else(|| account.get("id"))
            .and_then(Value::as_str)
            .ok_or_else(|| Error::fatal("the account has no Salesforce id"))?
            .to_string();
        let at = input["at"]
            .as_str()
            .or(input["now"].as_str())
            .map(sf_time)
            .transpose()?
            .unwrap_or(jiff::Timestamp::UNIX_EPOCH);
        let task = |status: &str, subject: &str, date: jiff::Timestamp| {
            let mut t = json!({
                "Subject": subject,
                "Description": content["body"].as_str().unwrap_or(""),
                "ActivityDate": date.strftime("%Y-%m-%d").to_string(),
                "Status": status,
                "Priority": match content["priority"].as_str().map(str::to_lowercase).as_deref() {
                    Some("high" | "urgent") => "High",
                    Some("low") => "Low",
                    _ => "Normal",
                },
                "WhatId": sf_id,
            });
            if let Some(owner) = account["owner"]["salesforce_id"].as_str() {
                t["OwnerId"] = json!(owner);
            }
            t
        };
        let body = match action {
            "create_task" => {
                let subject = content["subject"].as_str().ok_or_else(|| {
                    Error::fatal("create_task: the template must render a `subject`")
                })?;
                let due = match content["due"].as_str() {
                    Some(d) => sf_time(d)?,
                    None => at
                        .checked_add(jiff::SignedDuration::from_hours(24 * self.c.task_due_days))
                        .map_err(|e| Error::fatal(e.to_string()))?,
                };
                task("Not Started", subject, due)
            }
            "create_note" => {
                content["body"].as_str().ok_or_else(|| {
                    Error::fatal("create_note: the template must render a `body`")
                })?;
                task(
                    "Completed",
                    content["subject"]
                        .as_str()
                        .unwrap_or("Note from Touchpilot"),
                    at,
                )
            }
            "update_field" => {
                let field = content["field"].as_str().ok_or_else(|| {
                    Error::fatal("update_field: the template must render `field` and `value`")
                })?;
                let path = format!("/services/data/{}/sobjects/Account/{sf_id}", self.version);
                self.send(
                    "PATCH",
                    &path,
                    Some(&json!({field: content["value"]})),
                    "update_field",
                )?;
                return Ok(json!({"id": sf_id, "created": false}));
            }
            other => {
                return Err(Error::fatal(format!(
                    "salesforce has no action `{other}`; it offers {ACTIONS}"
                )));
            }
        };
        // Upsert by external id: a retry updates what the first attempt created.
        let path = format!(
            "/services/data/{}/sobjects/Task/{}/{}",
            self.version,
            self.c.key_field,
            url_encode(key)
        );
        let resp = self.send("PATCH", &path, Some(&body), action)?;
        let created = resp.status == 201;
        let mut id = if resp.body.trim().is_empty() {
            Value::Null
        } else {
            resp.json()?["id"].clone()
        };
        if id.is_null() {
            // An update may answer 204 without a body: read the task by key.
            id = self
                .send("GET", &format!("{path}?fields=Id"), None, action)?
                .json()?["Id"]
                .clone();
        }
        Ok(json!({"id": id, "created": created}))
    }
}

impl Connector for Salesforce {
    const NAME: &'static str = "salesforce";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const CAPABILITIES: u64 = caps::SOURCE | caps::ACTIONS;

    fn open(host: Host, config: Value) -> Result<Self, Error> {
        Salesforce::new(host, config)
    }

    fn call(&self, op: &str, input: Value) -> Result<Value, Error> {
        match op {
            "check" => Ok(json!({})),
            "poll" => self.poll(&input),
            "act" => self.act(&input),
            other => Err(Error::fatal(format!("unknown operation `{other}`"))),
        }
    }
}

declare_connector!(Salesforce);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn salesforce_times_and_literals() {
        assert_eq!(
            sf_time("2013-05-20T20:49:32.000+0000").unwrap().to_string(),
            "2013-05-20T20:49:32Z"
        );
        assert_eq!(
            sf_time("2026-01-01T00:00:00Z").unwrap().as_second(),
            1767225600
        );
        assert_eq!(
            soql_time(sf_time("2026-01-01T00:00:00.5Z").unwrap()),
            "2026-01-01T00:00:00Z"
        );
        assert_eq!(soql_string("O'Brien"), "'O\\'Brien'");
        assert_eq!(
            url_encode("SELECT Id FROM Account"),
            "SELECT+Id+FROM+Account"
        );
    }

    #[test]
    fn configuration_needs_credentials_and_an_instance() {
        let e = Salesforce::new(Host::offline(), json!({})).err().unwrap();
        assert!(e.message.contains("give `access_token`"), "{e}");
        let e = Salesforce::new(Host::offline(), json!({"access_token": "x"}))
            .err()
            .unwrap();
        assert!(e.message.contains("`instance_url` is required"), "{e}");
        let s = Salesforce::new(
            Host::offline(),
            json!({"access_token": "x", "instance_url": "https://x.my.salesforce.com/"}),
        )
        .unwrap();
        assert_eq!(s.role("Executive Sponsor"), "sponsor");
        assert_eq!(s.role("Economic Buyer"), "economic_buyer");
    }
}
