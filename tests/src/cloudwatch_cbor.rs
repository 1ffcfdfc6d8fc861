//! A bridge between the Rust SDK's CloudWatch client and moto 5.2.5. Tests point a
//! CloudWatch client at [`CborBridge::url`] (the other services talk to moto directly).
//!
//! `aws-sdk-cloudwatch` speaks only Smithy RPC v2 CBOR (`POST /service/.../operation/<Name>`),
//! which moto 5.2.5 does not route (it answers 404); moto does speak CloudWatch's AWS JSON 1.0
//! protocol. The bridge decodes each CBOR request into JSON, forwards it to moto with the same
//! `Authorization` header (so moto's recorder still counts it as `monitoring:<Name>`), and
//! encodes moto's JSON answer back into CBOR. It handles the CBOR subset these operations use,
//! uncompressed: the client is built with request compression off (PutMetricData bodies over
//! 10 KiB are otherwise gzipped, which real CloudWatch accepts).

use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, body::Bytes};
use serde_json::{Map, Number, Value};
use tokio::task::JoinHandle;

use crate::http_relay;

const TARGET_PREFIX: &str = "GraniteServiceVersion20100801";
/// Response members that are timestamps (CBOR tag 1) or doubles in the CloudWatch model
/// (GetMetricData, and DescribeAlarms' metric and composite alarms).
const TIMESTAMP_KEYS: &[&str] = &[
    "Timestamps",
    "Timestamp",
    "StateUpdatedTimestamp",
    "StateTransitionedTimestamp",
    "AlarmConfigurationUpdatedTimestamp",
    "ActionsSuppressedByTimestamp",
];
const DOUBLE_KEYS: &[&str] = &["Values", "Value", "Threshold"];

pub struct CborBridge {
    url: String,
    server: JoinHandle<()>,
}

impl Drop for CborBridge {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl CborBridge {
    pub async fn start(moto_url: &str) -> CborBridge {
        let (moto_url, http) = (moto_url.to_owned(), reqwest::Client::new());
        let served = http_relay::serve("CloudWatch CBOR bridge", move |request| {
            forward(request, moto_url.clone(), http.clone())
        })
        .await;
        CborBridge {
            url: served.url,
            server: served.task,
        }
    }

    /// The endpoint to give the CloudWatch client.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A CloudWatch client with `sdk`'s region and credentials that talks to moto through the
    /// bridge (request compression off: the bridge reads plain CBOR only).
    pub fn cloudwatch_client(&self, sdk: &aws_config::SdkConfig) -> aws_sdk_cloudwatch::Client {
        aws_sdk_cloudwatch::Client::from_conf(
            aws_sdk_cloudwatch::config::Builder::from(sdk)
                .endpoint_url(self.url())
                .disable_request_compression(true)
                .build(),
        )
    }
}

async fn forward(
    request: Request<hyper::body::Incoming>,
    moto_url: String,
    http: reqwest::Client,
) -> http_relay::Answer {
    let (parts, body) = request.into_parts();
    let operation = parts
        .uri
        .path()
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    let body = body
        .collect()
        .await
        .map_err(std::io::Error::other)?
        .to_bytes();
    let json = if body.is_empty() {
        Value::Object(Map::new())
    } else {
        let mut decoder = Decoder {
            bytes: &body,
            at: 0,
        };
        decoder.value().map_err(std::io::Error::other)?
    };
    let mut forwarded = http
        .post(format!("{moto_url}/"))
        .header("X-Amz-Target", format!("{TARGET_PREFIX}.{operation}"))
        .header("Content-Type", "application/x-amz-json-1.0")
        .body(json.to_string());
    if let Some(auth) = parts.headers.get("authorization") {
        forwarded = forwarded.header("Authorization", auth.as_bytes());
    }
    let answer = forwarded.send().await.map_err(std::io::Error::other)?;
    let status = answer.status().as_u16();
    let text = answer.text().await.map_err(std::io::Error::other)?;
    let json: Value = if text.trim().is_empty() {
        Value::Object(Map::new())
    } else {
        serde_json::from_str(&text)
            .map_err(|e| std::io::Error::other(format!("moto answered {text}: {e}")))?
    };
    let mut out = Vec::new();
    encode(&json, None, &mut out);
    Ok(Response::builder()
        .status(status)
        .header("Content-Type", "application/cbor")
        .header("smithy-protocol", "rpc-v2-cbor")
        .body(Full::new(Bytes::from(out)))
        .expect("valid response"))
}

struct Decoder<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Decoder<'_> {
    fn byte(&mut self) -> Result<u8, String> {
        let b = *self.bytes.get(self.at).ok_or("truncated CBOR")?;
        self.at += 1;
        Ok(b)
    }

    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        let slice = self
            .bytes
            .get(self.at..self.at.checked_add(n).ok_or("CBOR length overflows")?)
            .ok_or("truncated CBOR")?;
        self.at += n;
        Ok(slice)
    }

    /// The argument of a head byte; `None` for the indefinite-length marker.
    fn argument(&mut self, info: u8) -> Result<Option<u64>, String> {
        Ok(Some(match info {
            0..=23 => u64::from(info),
            24 => u64::from(self.byte()?),
            25 => u64::from(u16::from_be_bytes(self.take(2)?.try_into().unwrap())),
            26 => u64::from(u32::from_be_bytes(self.take(4)?.try_into().unwrap())),
            27 => u64::from_be_bytes(self.take(8)?.try_into().unwrap()),
            31 => return Ok(None),
            _ => return Err(format!("reserved CBOR additional info {info}")),
        }))
    }

    fn at_break(&mut self) -> bool {
        if self.bytes.get(self.at) == Some(&0xff) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn value(&mut self) -> Result<Value, String> {
        let head = self.byte()?;
        let (major, info) = (head >> 5, head & 0x1f);
        Ok(match major {
            0 => Value::from(self.argument(info)?.ok_or("indefinite integer")?),
            1 => {
                let n = self.argument(info)?.ok_or("indefinite integer")?;
                Value::from(-1 - i64::try_from(n).map_err(|_| "negative integer out of range")?)
            }
            2 | 3 => {
                let n = self
                    .argument(info)?
                    .ok_or("indefinite strings are not supported")?
                    as usize;
                Value::String(String::from_utf8_lossy(self.take(n)?).into_owned())
            }
            4 => {
                let mut items = Vec::new();
                match self.argument(info)? {
                    Some(n) => {
                        for _ in 0..n {
                            items.push(self.value()?);
                        }
                    }
                    None => {
                        while !self.at_break() {
                            items.push(self.value()?);
                        }
                    }
                }
                Value::Array(items)
            }
            5 => {
                let mut map = Map::new();
                let count = self.argument(info)?;
                let mut read = 0;
                while count.map_or(!self.at_break(), |n| read < n) {
                    let Value::String(key) = self.value()? else {
                        return Err("non-string map key".into());
                    };
                    map.insert(key, self.value()?);
                    read += 1;
                }
                Value::Object(map)
            }
            // Tag 1 (epoch-seconds timestamp) and any other tag: JSON 1.0 takes the bare number.
            6 => {
                self.argument(info)?;
                self.value()?
            }
            _ => match info {
                20 => Value::Bool(false),
                21 => Value::Bool(true),
                22 | 23 => Value::Null,
                25 => Value::from(half_to_f64(u16::from_be_bytes(
                    self.take(2)?.try_into().unwrap(),
                ))),
                26 => Value::from(f64::from(f32::from_be_bytes(
                    self.take(4)?.try_into().unwrap(),
                ))),
                27 => Value::from(f64::from_be_bytes(self.take(8)?.try_into().unwrap())),
                _ => return Err(format!("unsupported CBOR simple value {info}")),
            },
        })
    }
}

fn half_to_f64(bits: u16) -> f64 {
    let exponent = (bits >> 10) & 0x1f;
    let mantissa = f64::from(bits & 0x3ff);
    let magnitude = match exponent {
        0 => mantissa * 2f64.powi(-24),
        31 => {
            if mantissa == 0.0 {
                f64::INFINITY
            } else {
                f64::NAN
            }
        }
        e => (1.0 + mantissa / 1024.0) * 2f64.powi(i32::from(e) - 15),
    };
    if bits & 0x8000 != 0 {
        -magnitude
    } else {
        magnitude
    }
}

fn head(major: u8, n: u64, out: &mut Vec<u8>) {
    let major = major << 5;
    match n {
        0..=23 => out.push(major | n as u8),
        24..=0xff => out.extend([major | 24, n as u8]),
        0x100..=0xffff => {
            out.push(major | 25);
            out.extend((n as u16).to_be_bytes());
        }
        0x1_0000..=0xffff_ffff => {
            out.push(major | 26);
            out.extend((n as u32).to_be_bytes());
        }
        _ => {
            out.push(major | 27);
            out.extend(n.to_be_bytes());
        }
    }
}

fn encode_f64(x: f64, out: &mut Vec<u8>) {
    out.push(0xfb);
    out.extend(x.to_be_bytes());
}

/// Encodes JSON as CBOR; `key` is the member the value belongs to, to type numbers the way
/// the CloudWatch model does.
fn encode(value: &Value, key: Option<&str>, out: &mut Vec<u8>) {
    match value {
        Value::Null => out.push(0xf6),
        Value::Bool(b) => out.push(if *b { 0xf5 } else { 0xf4 }),
        Value::Number(n) if key.is_some_and(|k| TIMESTAMP_KEYS.contains(&k)) => {
            out.push(0xc1);
            encode_f64(n.as_f64().unwrap_or_default(), out);
        }
        Value::Number(n) if key.is_some_and(|k| DOUBLE_KEYS.contains(&k)) || n.is_f64() => {
            encode_f64(n.as_f64().unwrap_or_default(), out)
        }
        Value::Number(n) => encode_integer(n, out),
        Value::String(s) => {
            head(3, s.len() as u64, out);
            out.extend(s.as_bytes());
        }
        Value::Array(items) => {
            head(4, items.len() as u64, out);
            for item in items {
                encode(item, key, out);
            }
        }
        Value::Object(map) => {
            head(5, map.len() as u64, out);
            for (k, v) in map {
                head(3, k.len() as u64, out);
                out.extend(k.as_bytes());
                encode(v, Some(k), out);
            }
        }
    }
}

fn encode_integer(n: &Number, out: &mut Vec<u8>) {
    match (n.as_u64(), n.as_i64()) {
        (Some(u), _) => head(0, u, out),
        (None, Some(i)) => head(1, (-1 - i) as u64, out),
        _ => encode_f64(n.as_f64().unwrap_or_default(), out),
    }
}
