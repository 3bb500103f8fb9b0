//! A canary's Prometheus condition: one instant query over the HTTP API
//! (`GET /api/v1/query?query=…`), its one value compared with the condition's `max`/`min`.
//!
//! What Prometheus answers (checked against Debian's prometheus 2.42): `{"status":"success",
//! "data":{"resultType":"vector","result":[{"metric":{…},"value":[<time>,"<number>"]}]}}`, a
//! `scalar` as `"result":[<time>,"<number>"]`; numbers are strings (`"NaN"`, `"+Inf"` too);
//! a bad query is HTTP 400 with `{"status":"error","error":"…"}`. A query over series that do
//! not exist yet (no answer of the new servers scraped) gives an empty vector.

use std::time::Duration;

use serde_json::Value;

use crate::config::progressive::PromCheck;

/// How long one query may take.
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// What one evaluation of a Prometheus condition found.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Evaluated {
    /// The query as sent (`$release`/`$version` filled in).
    pub query: String,
    /// Its value; `None`: no series yet (not judged).
    pub value: Option<f64>,
    /// The condition broken (with the value), or why the query could not be judged.
    pub failed: Option<String>,
}

impl Evaluated {
    /// `prometheus 0.31 (query …)`
    pub fn describe(&self) -> String {
        match self.value {
            Some(v) => format!("prometheus `{}` = {v}", self.query),
            None => format!("prometheus `{}`: no data yet", self.query),
        }
    }
}

/// The value of an instant query's answer: `Ok(None)` for an empty vector; an error for
/// several series, an error answer or something else.
pub fn value_of(body: &Value) -> Result<Option<f64>, String> {
    if body["status"] != "success" {
        return Err(format!(
            "Prometheus answered an error: {}",
            body["error"].as_str().unwrap_or("(no message)")
        ));
    }
    let data = &body["data"];
    let sample = match data["resultType"].as_str() {
        Some("vector") => {
            let list = data["result"].as_array().cloned().unwrap_or_default();
            match list.len() {
                0 => return Ok(None),
                1 => list[0]["value"].clone(),
                n => {
                    return Err(format!(
                        "the query gives {n} series, it must give one value (wrap it in sum(…) or max(…))"
                    ))
                }
            }
        }
        Some("scalar") => data["result"].clone(),
        other => {
            return Err(format!(
                "the query gives a {}, it must give one value",
                other.unwrap_or("nothing")
            ))
        }
    };
    let text = sample[1]
        .as_str()
        .ok_or_else(|| format!("no value in the answer: {sample}"))?;
    let v = match text {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        t => t
            .parse::<f64>()
            .map_err(|_| format!("'{t}' is not a number"))?,
    };
    Ok(Some(v))
}

/// Asks the Prometheus of `check` its query (for release `release` of `version`) and judges
/// the value. An unreachable Prometheus or a bad query fails the condition: a canary that
/// cannot be judged does not go on.
pub async fn evaluate(check: &PromCheck, release: &str, version: &str) -> Evaluated {
    let query = check.query_for(release, version);
    let mut e = Evaluated {
        query: query.clone(),
        value: None,
        failed: None,
    };
    match ask(check, &query).await {
        Ok(Some(v)) => {
            e.value = Some(v);
            e.failed = check.judge(&query, v).err();
        }
        Ok(None) => {}
        Err(why) => e.failed = Some(format!("prometheus query `{query}`: {why}")),
    }
    e
}

async fn ask(check: &PromCheck, query: &str) -> Result<Option<f64>, String> {
    let base = crate::config::expand_env(&check.url);
    let url = format!("{}/api/v1/query", base.trim_end_matches('/'));
    let (client, _) = crate::notify::client()?;
    let full = reqwest::Url::parse_with_params(&url, &[("query", query)])
        .map_err(|e| format!("'{url}' is not an address: {e}"))?;
    let r = client
        .get(full)
        .timeout(QUERY_TIMEOUT)
        .send()
        .await
        .map_err(|e| format!("{url}: {}", crate::notify::error_text(&e)))?;
    let status = r.status();
    let bytes = r
        .bytes()
        .await
        .map_err(|e| format!("{url}: {}", crate::notify::error_text(&e)))?;
    let body: Value = serde_json::from_slice(&bytes)
        .map_err(|e| format!("{url} answered status {status} without JSON: {e}"))?;
    value_of(&body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn one_value_is_read_from_a_vector_or_a_scalar() {
        let v = json!({"status":"success","data":{"resultType":"vector","result":[
            {"metric":{},"value":[1700000000.1,"0.25"]}]}});
        assert_eq!(value_of(&v), Ok(Some(0.25)));
        let s = json!({"status":"success","data":{"resultType":"scalar","result":[1.0,"+Inf"]}});
        assert_eq!(value_of(&s), Ok(Some(f64::INFINITY)));
        let empty = json!({"status":"success","data":{"resultType":"vector","result":[]}});
        assert_eq!(value_of(&empty), Ok(None));
    }

    #[test]
    fn several_series_or_an_error_are_refused() {
        let two = json!({"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"a":"1"},"value":[1.0,"1"]},{"metric":{"a":"2"},"value":[1.0,"2"]}]}});
        assert!(value_of(&two).unwrap_err().contains("2 series"));
        let bad = json!({"status":"error","errorType":"bad_data","error":"parse error at char 4"});
        assert!(value_of(&bad)
            .unwrap_err()
            .contains("parse error at char 4"));
    }

    #[test]
    fn max_and_min_judge_the_value() {
        let c = PromCheck {
            url: "http://p".into(),
            query: "q{server=~\".*-$release-.*\"}".into(),
            max: Some(0.05),
            min: None,
        };
        assert_eq!(c.query_for("r7", "v2"), "q{server=~\".*-r7-.*\"}");
        assert!(c.judge("q", 0.01).is_ok());
        assert_eq!(
            c.judge("q", 0.3).unwrap_err(),
            "prometheus query `q` = 0.3 is above max 0.05"
        );
        assert!(c.judge("q", f64::NAN).is_ok(), "0/0: nothing to judge yet");
        let m = PromCheck {
            min: Some(10.0),
            max: None,
            ..c
        };
        assert_eq!(
            m.judge("q", 3.0).unwrap_err(),
            "prometheus query `q` = 3 is below min 10"
        );
    }
}
