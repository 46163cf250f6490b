//! Portcullis as a Cloudflare Worker. The entry point only hands the request to the adapter.

mod adapter;
mod auth;
mod cache;
mod sso;

use worker::{event, Context, Env};

#[event(start)]
fn start() {
    console_error_panic_hook::set_once();
}

#[event(fetch)]
async fn fetch(
    request: web_sys::Request,
    env: Env,
    ctx: Context,
) -> worker::Result<web_sys::Response> {
    Ok(adapter::handle(request, env, ctx).await)
}
