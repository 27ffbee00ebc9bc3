//! The part of a webhook event a receiver acts on, parsed without copying: what `POST /webhook`
//! parses on every delivery instead of [`WebhookEvent`](crate::webhook_event::WebhookEvent),
//! whose owned strings and flattened `extra` map (serde buffers a flattened struct's whole map)
//! cost more than verifying the signature.
//!
//! It refuses everything `WebhookEvent` refuses (CATALOGUE W15, W17, W18): the same required
//! fields, duplicate keys, and every field it does not keep still parsed as a JSON value through
//! serde_json's recursion limit, so a body nested 10,000 deep or a number of a million digits is
//! refused (serde's `IgnoredAny` would skip them unchecked; hence the hand-written visitors).
//! It is stricter in one place: `WebhookEvent` skips unknown top-level fields unchecked, so
//! nesting beyond the limit there passes it but not this.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::webhook_event::{SESSION_STATUS_RUN_STARTED, WebhookEventKind};

/// `{"type":"event","id":"whe_...","created_at":...,"data":{"type":...,"id":...}}`, borrowed
/// from the body (owned only where a JSON string has escapes).
#[derive(Clone, Debug, PartialEq)]
pub struct WebhookEventHead<'a> {
    pub kind: WebhookEventKind,
    /// Equals the `webhook-id` header.
    pub id: Cow<'a, str>,
    pub created_at: Cow<'a, str>,
    pub data: WebhookEventDataHead<'a>,
}

/// `data` of a [`WebhookEventHead`]: its type and the id of what it is about.
#[derive(Clone, Debug, PartialEq)]
pub struct WebhookEventDataHead<'a> {
    pub kind: Cow<'a, str>,
    pub id: Cow<'a, str>,
}

impl<'a> WebhookEventHead<'a> {
    /// Parses a webhook body: the same result as `serde_json::from_slice::<WebhookEventHead>`,
    /// error text included, for every input. The sender's usual body (plain strings, flat) is
    /// read by a byte scanner at a fraction of serde_json's cost; anything else (escapes,
    /// fractions, deep nesting, any doubt) goes to serde_json (`webhook_event_scan.rs`).
    pub fn parse(body: &'a [u8]) -> Result<Self, serde_json::Error> {
        match crate::webhook_event_scan::plain_head(body) {
            Some(head) => Ok(head),
            None => serde_json::from_slice(body),
        }
    }

    pub fn is_run_started(&self) -> bool {
        self.data.kind == SESSION_STATUS_RUN_STARTED
    }
}

/// A JSON string, borrowed when it has no escapes.
struct Text<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

/// Any JSON value, checked as `serde_json::Value` would be (depth, number range) and dropped.
struct Checked;

impl<'de> Deserialize<'de> for Checked {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Checked;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Checked, E> {
                Ok(Checked)
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Checked, E> {
                Ok(Checked)
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Checked, E> {
                Ok(Checked)
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Checked, E> {
                Ok(Checked)
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Checked, E> {
                Ok(Checked)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Checked, E> {
                Ok(Checked)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Checked, A::Error> {
                while seq.next_element::<Checked>()?.is_some() {}
                Ok(Checked)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Checked, A::Error> {
                while map.next_entry::<Checked, Checked>()?.is_some() {}
                Ok(Checked)
            }
        }
        d.deserialize_any(V)
    }
}

/// Stores `value` in `slot`, refusing a second occurrence of the key.
fn once<T, E: de::Error>(slot: &mut Option<T>, value: T, key: &'static str) -> Result<(), E> {
    if slot.is_some() {
        return Err(E::duplicate_field(key));
    }
    *slot = Some(value);
    Ok(())
}

impl<'de> Deserialize<'de> for WebhookEventDataHead<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = WebhookEventDataHead<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("the data object of a webhook event")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let (mut kind, mut id) = (None, None);
                while let Some(Text(key)) = map.next_key::<Text<'de>>()? {
                    match &*key {
                        "type" => once(&mut kind, map.next_value::<Text<'de>>()?.0, "type")?,
                        "id" => once(&mut id, map.next_value::<Text<'de>>()?.0, "id")?,
                        _ => {
                            map.next_value::<Checked>()?;
                        }
                    }
                }
                Ok(WebhookEventDataHead {
                    kind: kind.ok_or_else(|| de::Error::missing_field("type"))?,
                    id: id.ok_or_else(|| de::Error::missing_field("id"))?,
                })
            }
        }
        d.deserialize_map(V)
    }
}

impl<'de> Deserialize<'de> for WebhookEventHead<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = WebhookEventHead<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a webhook event object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let (mut kind, mut id, mut created_at, mut data) = (None, None, None, None);
                while let Some(Text(key)) = map.next_key::<Text<'de>>()? {
                    match &*key {
                        "type" => once(&mut kind, map.next_value::<WebhookEventKind>()?, "type")?,
                        "id" => once(&mut id, map.next_value::<Text<'de>>()?.0, "id")?,
                        "created_at" => once(
                            &mut created_at,
                            map.next_value::<Text<'de>>()?.0,
                            "created_at",
                        )?,
                        "data" => once(&mut data, map.next_value()?, "data")?,
                        _ => {
                            map.next_value::<Checked>()?;
                        }
                    }
                }
                Ok(WebhookEventHead {
                    kind: kind.unwrap_or_default(),
                    id: id.ok_or_else(|| de::Error::missing_field("id"))?,
                    created_at: created_at.ok_or_else(|| de::Error::missing_field("created_at"))?,
                    data: data.ok_or_else(|| de::Error::missing_field("data"))?,
                })
            }
        }
        d.deserialize_map(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhook_event::WebhookEvent;

    /// Bodies both parsers must accept with the same values, and bodies both must refuse.
    #[test]
    fn the_head_accepts_and_refuses_what_the_full_event_does() {
        let deep = format!(
            r#"{{"type":"event","id":"w","created_at":"t","data":{{"type":"x","id":"y","x":{}{}}}}}"#,
            "[".repeat(10_000),
            "]".repeat(10_000)
        );
        let deep_top = format!(
            r#"{{"type":"event","id":"w","created_at":"t","z":{}1{},"data":{{"type":"x","id":"y"}}}}"#,
            "[".repeat(200),
            "]".repeat(200)
        );
        let huge = format!(
            r#"{{"type":"event","id":"w","created_at":"t","data":{{"type":"x","id":"y","n":1{}}}}}"#,
            "0".repeat(1_000_000)
        );
        let accepted = [
            r#"{"type":"event","id":"whe_1","created_at":"t","data":{"type":"session.status_run_started","id":"sesn_1","organization_id":"org_1"}}"#,
            // Escapes make the strings owned; the values are the same.
            r#"{"type":"event","id":"whe_\u0032","created_at":"t","data":{"type":"session.status\u005fidled","id":"sesn_\"q\"","vault_id":"v"}}"#,
            // No top-level type; nested unknown values of every kind.
            r#"{"id":"whe_3","created_at":"t","more":[null,true,-1,2.5e3,{"k":[]}],"data":{"type":"x","id":"y","extra":{"nested":[1,2]}}}"#,
        ];
        for body in accepted {
            let full: WebhookEvent = serde_json::from_str(body).unwrap();
            let head: WebhookEventHead<'_> = serde_json::from_str(body).unwrap();
            assert_eq!(head.kind, full.kind);
            assert_eq!(head.id, full.id);
            assert_eq!(head.created_at, full.created_at);
            assert_eq!(head.data.kind, full.data.kind);
            assert_eq!(head.data.id, full.data.id);
            assert_eq!(head.is_run_started(), full.is_run_started());
            assert_eq!(WebhookEventHead::parse(body.as_bytes()).unwrap(), head);
        }
        let plain: WebhookEventHead<'_> = serde_json::from_str(accepted[0]).unwrap();
        assert!(matches!(plain.id, Cow::Borrowed(_)), "no escapes, no copy");

        let refused = [
            r#"{"type":"event","id":"whe_1","created_at":"t","data":{"type":"x"}}"#,
            r#"{"type":"event","id":"whe_1","data":{"type":"x","id":"y"}}"#,
            r#"{"type":"other","id":"whe_1","created_at":"t","data":{"type":"x","id":"y"}}"#,
            r#"{"type":"event","id":7,"created_at":"t","data":{"type":"x","id":"y"}}"#,
            r#"{"type":"event","id":"a","id":"b","created_at":"t","data":{"type":"x","id":"y"}}"#,
            r#"{"type":"event","id":"a","created_at":"t","data":{"type":"x","id":"y","id":"z"}}"#,
            r#"{"type":"event","id":"whe_1","created_at":"t","data":{"type":"x","id":"y"}"#,
            r#"{"type":"event","id":"whe_1","created_at":"t","data":{"type":"x","id":"y"}}x"#,
            r#"{"type":"event","id":"whe_1","created_at":"t","data":[]}"#,
            "[]",
            &deep,
            &huge,
        ];
        for body in refused {
            let short = &body[..body.len().min(80)];
            assert!(
                serde_json::from_str::<WebhookEvent>(body).is_err(),
                "{short}"
            );
            assert!(
                serde_json::from_str::<WebhookEventHead<'_>>(body).is_err(),
                "{short}"
            );
            assert!(WebhookEventHead::parse(body.as_bytes()).is_err(), "{short}");
        }
        assert!(serde_json::from_str::<WebhookEventHead<'_>>(&deep_top).is_err());
        assert!(WebhookEventHead::parse(deep_top.as_bytes()).is_err());
    }
}
