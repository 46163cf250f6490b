use super::*;

fn h(pairs: &[(&str, &str)]) -> HeaderList {
    pairs
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

const ON: RouteCompression = RouteCompression { enabled: true };
const OFF: RouteCompression = RouteCompression { enabled: false };

#[test]
fn accept_encoding_is_read_in_every_spelling() {
    use Coding::{Br, Gzip};
    let cases: &[(&str, Option<Coding>)] = &[
        // What browsers send.
        ("gzip, deflate, br, zstd", Some(Br)),
        ("gzip, deflate", Some(Gzip)),
        ("br", Some(Br)),
        ("gzip", Some(Gzip)),
        // Letter case, spaces and tabs.
        ("GZIP", Some(Gzip)),
        ("Br", Some(Br)),
        ("  gzip  ,\tbr\t", Some(Br)),
        ("gzip ; q=0.5 , br ; q = 0.4", Some(Gzip)),
        ("gzip;Q=0.5,br;q=0.4", Some(Gzip)),
        // q-values choose; br wins a tie.
        ("gzip;q=1.0, br;q=0.9", Some(Gzip)),
        ("gzip;q=0.5, br;q=0.5", Some(Br)),
        ("gzip;q=0.001", Some(Gzip)),
        ("br;q=1.000", Some(Br)),
        // Refused codings.
        ("gzip;q=0", None),
        ("gzip;q=0.0, br;q=0.000", None),
        ("br;q=0, gzip", Some(Gzip)),
        ("gzip;q=0, br;q=0, deflate", None),
        // Duplicates: the lowest weight holds, wherever it is.
        ("gzip, gzip;q=0", None),
        ("gzip;q=0, gzip", None),
        ("gzip;q=0.2, br;q=0.5, br;q=0.1", Some(Gzip)),
        // `*` stands for every coding the header does not name.
        ("*", Some(Br)),
        ("*;q=0.5, br;q=0", Some(Gzip)),
        ("*;q=0", None),
        ("br;q=0.1, *;q=0.5", Some(Gzip)),
        ("*;q=0, gzip", Some(Gzip)),
        // identity is not a coding to encode with; refusing it changes nothing.
        ("identity", None),
        ("identity;q=0", None),
        ("identity;q=0, gzip;q=0", None),
        // x-gzip is gzip.
        ("x-gzip", Some(Gzip)),
        ("X-GZIP, gzip;q=0", None),
        // Nothing accepted.
        ("", None),
        (",,,", None),
        ("deflate, zstd, compress", None),
        // Malformed q-values never turn a coding on.
        ("gzip;q=1.5", None),
        ("gzip;q=-1", None),
        ("gzip;q=.5", None),
        ("gzip;q=0.1234", None),
        ("gzip;q=abc", None),
        ("gzip;q=", None),
        ("gzip;q", None),
        ("gzip;q=1;q=0", None),
        ("gzip;q=0;q=1", None),
        ("gzip;q=0.5e1", None),
        // Other parameters are ignored.
        ("gzip;level=9", Some(Gzip)),
        // Not a coding: a name that is not a token, a near-miss spelling.
        ("gz ip", None),
        ("\"gzip\"", None),
        ("gzip2, brotli, g zip", None),
        ("gzip\u{0}", None),
    ];
    for (header, want) in cases {
        assert_eq!(choose(Some(header)), *want, "Accept-Encoding: {header:?}");
    }
    assert_eq!(choose(None), None, "no Accept-Encoding at all");
}

#[test]
fn every_accept_encoding_header_is_read_as_one_list() {
    let req = h(&[
        ("accept-encoding", "gzip"),
        ("accept", "*/*"),
        ("Accept-Encoding", "br;q=0"),
    ]);
    assert_eq!(accept_encoding(&req).as_deref(), Some("gzip,br;q=0"));
    assert_eq!(choose(accept_encoding(&req).as_deref()), Some(Coding::Gzip));
    // Refused in a second header: refused.
    let req = h(&[("accept-encoding", "gzip"), ("accept-encoding", "gzip;q=0")]);
    assert_eq!(choose(accept_encoding(&req).as_deref()), None);
    // With underscores_in_headers: "allow", `_` spells the same header.
    let req = h(&[("accept_encoding", "gzip")]);
    assert_eq!(choose(accept_encoding(&req).as_deref()), Some(Coding::Gzip));
    assert_eq!(accept_encoding(&h(&[("accept", "*/*")])), None);
}

#[test]
fn compressible_types() {
    let cases: &[(&str, bool)] = &[
        ("text/html", true),
        ("text/html; charset=utf-8", true),
        ("TEXT/HTML;charset=UTF-8", true),
        ("text/plain", true),
        ("text/css", true),
        ("text/csv", true),
        ("text/javascript", true),
        ("text/xml", true),
        ("  text/plain  ", true),
        ("application/json", true),
        ("Application/JSON; charset=utf-8", true),
        ("application/javascript", true),
        ("application/x-javascript", true),
        ("application/ecmascript", true),
        ("application/xml", true),
        ("application/xhtml+xml", true),
        ("application/rss+xml", true),
        ("application/ld+json", true),
        ("application/problem+json", true),
        ("application/vnd.api+json", true),
        ("image/svg+xml", true),
        ("IMAGE/SVG+XML", true),
        // Streams leave as they arrive.
        ("text/event-stream", false),
        ("Text/Event-Stream; charset=utf-8", false),
        // Already compressed, or binary.
        ("image/png", false),
        ("image/jpeg", false),
        ("image/webp", false),
        ("image/gif", false),
        ("image/x+xml", false),
        ("video/mp4", false),
        ("audio/mpeg", false),
        ("font/woff2", false),
        ("application/zip", false),
        ("application/gzip", false),
        ("application/octet-stream", false),
        ("application/pdf", false),
        ("application/wasm", false),
        ("application/jsonx", false),
        ("application/json5x", false),
        ("application/x-ndjson", false),
        // Not a media type.
        ("", false),
        ("text", false),
        ("/json", false),
        ("text/", false),
        ("json", false),
        ("text /html", false),
    ];
    for (ct, want) in cases {
        assert_eq!(compressible_type(ct), *want, "Content-Type: {ct:?}");
    }
}

#[test]
fn which_responses_are_eligible() {
    /// Method, status, the client's headers, eligible, why.
    type Case<'a> = (&'a str, u16, &'a [(&'a str, &'a str)], bool, &'a str);
    let html = ("content-type", "text/html");
    let big = ("content-length", "2048");
    let cases: &[Case] = &[
        ("GET", 200, &[html, big], true, "compressible, long enough"),
        (
            "GET",
            200,
            &[html],
            true,
            "unknown length counts as compressible",
        ),
        (
            "POST",
            201,
            &[html, big],
            true,
            "any method's response but HEAD",
        ),
        ("GET", 404, &[html, big], true, "an error page"),
        ("GET", 500, &[html, big], true, "a server error page"),
        ("HEAD", 200, &[html, big], false, "HEAD has no body"),
        ("head", 200, &[html, big], false, "HEAD in any letter case"),
        ("GET", 204, &[html], false, "204 has no body"),
        ("GET", 205, &[html], false, "205 has no body"),
        ("GET", 304, &[html], false, "304 has no body"),
        (
            "GET",
            206,
            &[html, big, ("content-range", "bytes 0-2047/9000")],
            false,
            "a range",
        ),
        (
            "GET",
            200,
            &[html, big, ("content-range", "bytes 0-2047/9000")],
            false,
            "a range in a 200",
        ),
        ("GET", 101, &[html], false, "not a final response"),
        (
            "GET",
            200,
            &[html, ("content-length", "1023")],
            false,
            "below the minimum",
        ),
        (
            "GET",
            200,
            &[html, ("content-length", "1024")],
            true,
            "exactly the minimum",
        ),
        ("GET", 200, &[html, ("content-length", "0")], false, "empty"),
        (
            "GET",
            200,
            &[html, ("content-length", "12"), ("content-length", "12")],
            false,
            "repeated, small",
        ),
        (
            "GET",
            200,
            &[html, ("content-length", "12"), ("content-length", "4096")],
            true,
            "contradictory: unknown",
        ),
        (
            "GET",
            200,
            &[html, ("content-length", "+12")],
            true,
            "malformed: unknown",
        ),
        (
            "GET",
            200,
            &[html, big, ("content-encoding", "gzip")],
            false,
            "already gzip",
        ),
        (
            "GET",
            200,
            &[html, big, ("content-encoding", "br")],
            false,
            "already br",
        ),
        (
            "GET",
            200,
            &[html, big, ("content-encoding", "identity")],
            false,
            "an encoding header at all",
        ),
        (
            "GET",
            200,
            &[html, big, ("content-encoding", "")],
            false,
            "even an empty one",
        ),
        (
            "GET",
            200,
            &[html, big, ("cache-control", "no-transform")],
            false,
            "no-transform",
        ),
        (
            "GET",
            200,
            &[
                html,
                big,
                ("cache-control", "public, No-Transform, max-age=60"),
            ],
            false,
            "no-transform in a list",
        ),
        (
            "GET",
            200,
            &[
                html,
                big,
                ("cache-control", "max-age=60"),
                ("cache-control", "no-transform"),
            ],
            false,
            "no-transform in a second header",
        ),
        (
            "GET",
            200,
            &[html, big, ("cache-control", "max-age=60")],
            true,
            "other directives",
        ),
        (
            "GET",
            200,
            &[("content-type", "image/png"), big],
            false,
            "an image",
        ),
        (
            "GET",
            200,
            &[("content-type", "text/event-stream")],
            false,
            "server-sent events",
        ),
        ("GET", 200, &[big], false, "no content type"),
        (
            "GET",
            200,
            &[html, ("content-type", "image/png"), big],
            false,
            "two types, one an image",
        ),
        (
            "GET",
            200,
            &[("content-type", "text/event-stream"), html, big],
            false,
            "two types, one a stream",
        ),
        (
            "GET",
            200,
            &[html, ("content-type", "application/json"), big],
            true,
            "two compressible types",
        ),
    ];
    for (method, status, headers, want, why) in cases {
        assert_eq!(eligible(method, *status, &h(headers)), *want, "{why}");
    }
}

#[test]
fn the_plan_sets_the_coding_drops_the_length_and_varies() {
    let origin = h(&[
        ("content-type", "application/json"),
        ("content-length", "5000"),
        ("accept-ranges", "bytes"),
        ("etag", "\"v1\""),
        ("vary", "Origin"),
    ]);
    let mut headers = origin.clone();
    let coding = plan(ON, Some("gzip, br"), "GET", 200, &mut headers);
    assert_eq!(coding, Some(Coding::Br));
    assert_eq!(
        headers,
        h(&[
            ("content-type", "application/json"),
            ("etag", "W/\"v1\""),
            ("vary", "Origin"),
            ("vary", "Accept-Encoding"),
            ("content-encoding", "br"),
        ])
    );

    // A client that accepts nothing: identity, but still varied.
    let mut headers = origin.clone();
    assert_eq!(plan(ON, None, "GET", 200, &mut headers), None);
    let mut want = origin.clone();
    want.push(("vary".into(), "Accept-Encoding".into()));
    assert_eq!(headers, want);
    let mut headers = origin.clone();
    assert_eq!(plan(ON, Some("identity"), "GET", 200, &mut headers), None);
    assert_eq!(headers, want);

    // A weak ETag stays as it is; a Vary naming Accept-Encoding already, or `*`, is not added to.
    for vary in ["accept-encoding", "Origin, Accept-Encoding", "*"] {
        let mut headers = h(&[
            ("content-type", "text/plain"),
            ("etag", "W/\"v1\""),
            ("vary", vary),
        ]);
        assert_eq!(
            plan(ON, Some("gzip"), "GET", 200, &mut headers),
            Some(Coding::Gzip)
        );
        assert_eq!(
            headers,
            h(&[
                ("content-type", "text/plain"),
                ("etag", "W/\"v1\""),
                ("vary", vary),
                ("content-encoding", "gzip"),
            ]),
            "Vary: {vary}"
        );
    }
}

#[test]
fn nothing_changes_when_off_or_not_eligible() {
    type Case<'a> = (RouteCompression, &'a str, u16, &'a [(&'a str, &'a str)]);
    let cases: &[Case] = &[
        (OFF, "GET", 200, &[("content-type", "text/html")]),
        (ON, "HEAD", 200, &[("content-type", "text/html")]),
        (ON, "GET", 304, &[("content-type", "text/html")]),
        (
            ON,
            "GET",
            200,
            &[("content-type", "text/html"), ("content-encoding", "gzip")],
        ),
        (ON, "GET", 200, &[("content-type", "image/png")]),
        (
            ON,
            "GET",
            200,
            &[("content-type", "text/html"), ("content-length", "10")],
        ),
    ];
    for (route, method, status, headers) in cases {
        let mut out = h(headers);
        assert_eq!(
            plan(*route, Some("gzip, br"), method, *status, &mut out),
            None
        );
        assert_eq!(out, h(headers), "{route:?} {method} {status} {headers:?}");
    }
}

#[test]
fn the_route_setting_is_on_by_default() {
    assert!(RouteCompression::from_raw(None).enabled);
    assert!(RouteCompression::from_raw(Some(true)).enabled);
    assert!(!RouteCompression::from_raw(Some(false)).enabled);
}

#[test]
fn q_values() {
    let cases: &[(&str, Option<u16>)] = &[
        ("0", Some(0)),
        ("0.", Some(0)),
        ("0.5", Some(500)),
        ("0.05", Some(50)),
        ("0.125", Some(125)),
        ("1", Some(1000)),
        ("1.", Some(1000)),
        ("1.000", Some(1000)),
        ("1.001", None),
        ("2", None),
        ("00.5", None),
        ("0.1234", None),
        ("", None),
        (".", None),
        ("0.x", None),
        ("٠.5", None),
    ];
    for (text, want) in cases {
        assert_eq!(qvalue(text), *want, "q={text:?}");
    }
}
