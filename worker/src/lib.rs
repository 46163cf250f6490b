//! Portcullis as a Cloudflare Worker. The Worker's entry is JavaScript (`worker/js/entry.mjs`):
//! it does the runtime's I/O and calls this crate's exports ([`flow`]) once per step.

mod auth;
mod flow;
mod sso;

use worker::event;

#[event(start)]
fn panic_hook() {
    console_error_panic_hook::set_once();
}
