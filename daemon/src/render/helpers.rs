//! Template helpers: strict `if`/`unless`, `json`, `date`, and the escape
//! function of JSON templates.

use handlebars::{
    Context, Handlebars, Helper, HelperDef, HelperResult, JsonTruthy, Output, RenderContext,
    RenderError, RenderErrorReason, Renderable,
};

pub fn register(hb: &mut Handlebars<'static>) {
    hb.register_helper("if", Box::new(StrictIf { positive: true }));
    hb.register_helper("unless", Box::new(StrictIf { positive: false }));
    hb.register_helper("json", Box::new(JsonHelper));
    hb.register_helper("date", Box::new(DateHelper));
}

/// Escapes text for the inside of a JSON string, so that
/// `"name": "{{account.name}}"` stays valid JSON whatever the name holds.
pub fn json_string_escape(data: &str) -> String {
    let quoted = serde_json::to_string(data).unwrap_or_default();
    quoted[1..quoted.len() - 1].to_string()
}

fn missing(h: &Helper<'_>, index: usize) -> RenderError {
    let path = h.param(index).and_then(|p| p.relative_path().cloned());
    RenderErrorReason::MissingVariable(path).into()
}

/// `if` and `unless` that fail on a missing variable. handlebars-rust's own
/// treat a missing value as false even in strict mode (by design, #579),
/// which would silently drop a paragraph when data is absent.
#[derive(Clone, Copy)]
struct StrictIf {
    positive: bool,
}

impl HelperDef for StrictIf {
    fn call<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        r: &'reg Handlebars<'reg>,
        ctx: &'rc Context,
        rc: &mut RenderContext<'reg, 'rc>,
        out: &mut dyn Output,
    ) -> HelperResult {
        let name = if self.positive { "if" } else { "unless" };
        let param = h
            .param(0)
            .ok_or(RenderErrorReason::ParamNotFoundForIndex(name, 0))?;
        if param.is_value_missing() {
            return Err(missing(h, 0));
        }
        let include_zero = h
            .hash_get("includeZero")
            .and_then(|v| v.value().as_bool())
            .unwrap_or(false);
        let truthy = param.value().is_truthy(include_zero) == self.positive;
        match if truthy { h.template() } else { h.inverse() } {
            Some(t) => t.render(r, ctx, rc, out),
            None => Ok(()),
        }
    }
}

/// `{{json VALUE}}`: VALUE as a complete JSON document (strings quoted).
struct JsonHelper;

impl HelperDef for JsonHelper {
    fn call<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        _: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
        out: &mut dyn Output,
    ) -> HelperResult {
        let param = h
            .param(0)
            .ok_or(RenderErrorReason::ParamNotFoundForIndex("json", 0))?;
        if param.is_value_missing() {
            return Err(missing(h, 0));
        }
        let text = serde_json::to_string(param.value())
            .map_err(|e| RenderErrorReason::Other(format!("json: {e}")))?;
        out.write(&text)?;
        Ok(())
    }
}

/// `{{date VALUE "FORMAT" tz="Zone/Name"}}`: formats an RFC 3339 timestamp
/// or a `YYYY-MM-DD` date with strftime directives, in `tz` (default UTC).
struct DateHelper;

impl HelperDef for DateHelper {
    fn call<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        _: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
        out: &mut dyn Output,
    ) -> HelperResult {
        let value = h
            .param(0)
            .ok_or(RenderErrorReason::ParamNotFoundForIndex("date", 0))?;
        if value.is_value_missing() {
            return Err(missing(h, 0));
        }
        let format = h
            .param(1)
            .and_then(|p| p.value().as_str())
            .unwrap_or("%Y-%m-%d");
        let text = value
            .value()
            .as_str()
            .ok_or(RenderErrorReason::InvalidParamType(
                "date: a timestamp string",
            ))?;
        let tz = match h.hash_get("tz").and_then(|v| v.value().as_str()) {
            Some(name) => jiff::tz::TimeZone::get(name)
                .map_err(|e| RenderErrorReason::Other(format!("date: timezone `{name}`: {e}")))?,
            None => jiff::tz::TimeZone::UTC,
        };
        let rendered = if let Ok(ts) = text.parse::<jiff::Timestamp>() {
            ts.to_zoned(tz).strftime(format).to_string()
        } else if let Ok(d) = text.parse::<jiff::civil::Date>() {
            d.strftime(format).to_string()
        } else {
            return Err(RenderErrorReason::Other(format!(
                "date: `{text}` is neither an RFC 3339 timestamp nor a YYYY-MM-DD date"
            ))
            .into());
        };
        out.write(&rendered)?;
        Ok(())
    }
}
