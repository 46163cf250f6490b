//! The edge cache's I/O: the Workers Cache API (`caches.default`), carrying out the core's
//! decisions (`portcullis::cache`). The client never waits on a cache write: bodies are teed and
//! the write goes to `waitUntil`.

use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use web_sys::{ReadableStream, Response};

#[wasm_bindgen(inline_js = "
export function cache_match(key) { return caches.default.match(key); }
export function cache_put(key, response) { return caches.default.put(key, response); }
export function cache_delete(key) { return caches.default.delete(key); }
export function tee(stream) { return stream.tee(); }
")]
extern "C" {
    #[wasm_bindgen(catch)]
    fn cache_match(key: &str) -> Result<js_sys::Promise, JsValue>;
    #[wasm_bindgen(catch)]
    fn cache_put(key: &str, response: &Response) -> Result<js_sys::Promise, JsValue>;
    #[wasm_bindgen(catch)]
    fn cache_delete(key: &str) -> Result<js_sys::Promise, JsValue>;
    fn tee(stream: &ReadableStream) -> js_sys::Array;
}

/// The stored response under `key`, if any (errors of the cache count as a miss).
pub async fn lookup(key: &str) -> Option<Response> {
    let found = JsFuture::from(cache_match(key).ok()?).await.ok()?;
    found.dyn_into::<Response>().ok()
}

/// Stores `response` under `key`; resolves when written (for `waitUntil`).
pub async fn put(key: String, response: Response) {
    if let Ok(pending) = cache_put(&key, &response) {
        if let Err(e) = JsFuture::from(pending).await {
            worker::console_error!(
                "{}",
                serde_json::json!({ "cache_put_failed": format!("{e:?}") })
            );
        }
    }
}

/// Deletes the entry under `key`; whether there was one.
pub async fn delete(key: &str) -> bool {
    match cache_delete(key) {
        Ok(p) => JsFuture::from(p)
            .await
            .ok()
            .and_then(|v| v.as_bool())
            .unwrap_or(false),
        Err(_) => false,
    }
}

/// Two streams with the bytes of one: one for the client, one for the cache.
pub fn split(stream: &ReadableStream) -> (ReadableStream, ReadableStream) {
    let pair = tee(stream);
    (pair.get(0).unchecked_into(), pair.get(1).unchecked_into())
}
