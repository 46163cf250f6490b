use super::hiding::Hiding;
use super::*;
use crate::config::Config;
use crate::template::{Syntax, Template};

fn h(pairs: &[(&str, &str)]) -> HeaderList {
    pairs
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

fn rules(set: &[(&str, &str)], add: &[(&str, &str)], remove: &[&str]) -> HeaderRules {
    let t = |v: &str| Template::parse(v, Syntax::Header, &["id".to_string()]).unwrap();
    HeaderRules {
        set: set.iter().map(|(n, v)| (n.to_string(), t(v))).collect(),
        add: add.iter().map(|(n, v)| (n.to_string(), t(v))).collect(),
        remove: remove.iter().map(|s| s.to_string()).collect(),
    }
}

fn lookup(v: &Var) -> Option<&'static str> {
    match v {
        Var::RequestId => Some("rid"),
        Var::Param(p) if p == "id" => Some("7"),
        Var::Route => Some("r"),
        _ => None,
    }
}

const FWD: Forwarding<'static> = Forwarding {
    client_ip: Some("203.0.113.9"),
    proto: "https",
    public_host: "api.example.com",
    request_id: "rid",
    claim_headers: &[],
    forward_claims: &[],
};

#[test]
fn the_origin_request_drops_hop_by_hop_named_and_owned_headers() {
    let incoming = h(&[
        ("accept", "application/json"),
        ("connection", "keep-alive, X-Secret"),
        ("x-secret", "1"),
        ("keep-alive", "timeout=5"),
        ("te", "trailers"),
        ("trailer", "x"),
        ("transfer-encoding", "chunked"),
        ("upgrade", "h2c"),
        ("proxy-authorization", "Basic x"),
        ("proxy-connection", "keep-alive"),
        ("host", "api.example.com"),
        ("x-forwarded-for", "6.6.6.6"),
        ("x-forwarded-port", "1"),
        ("forwarded", "for=6.6.6.6"),
        ("x-real-ip", "6.6.6.6"),
        ("x-request-id", "client-chosen"),
        ("authorization", "Bearer t"),
    ]);
    let out = request_plan(&incoming, &FWD, &HeaderRules::default(), lookup);
    assert_eq!(
        out,
        h(&[
            ("accept", "application/json"),
            ("authorization", "Bearer t"),
            ("x-request-id", "rid"),
            ("x-forwarded-for", "203.0.113.9"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "api.example.com"),
        ])
    );
}

#[test]
fn without_a_client_address_no_forwarded_for_is_invented() {
    let fwd = Forwarding {
        client_ip: None,
        ..FWD
    };
    let out = request_plan(
        &h(&[("x-forwarded-for", "6.6.6.6")]),
        &fwd,
        &HeaderRules::default(),
        lookup,
    );
    assert!(!out.iter().any(|(n, _)| n == "x-forwarded-for"), "{out:?}");
}

#[test]
fn route_rules_apply_after_the_gateway_headers() {
    let incoming = h(&[("cookie", "a=1"), ("x-env", "client"), ("accept", "*/*")]);
    let r = rules(
        &[
            ("x-env", "edge"),
            ("x-id", "{param.id}"),
            ("x-ip", "{client_ip}"),
        ],
        &[("x-tag", "{route}"), ("accept", "text/plain")],
        &["cookie"],
    );
    let out = request_plan(&incoming, &FWD, &r, lookup);
    let get = |n: &str| {
        out.iter()
            .filter(|(k, _)| k == n)
            .map(|(_, v)| v.as_str())
            .collect::<Vec<_>>()
    };
    assert!(get("cookie").is_empty());
    assert_eq!(get("x-env"), ["edge"]);
    assert_eq!(get("x-id"), ["7"]);
    assert!(
        get("x-ip").is_empty(),
        "a missing placeholder makes the header absent"
    );
    assert_eq!(get("x-tag"), ["r"]);
    assert_eq!(get("accept"), ["*/*", "text/plain"]);
}

fn servers() -> Config {
    let text = serde_json::json!({
        "origins": {
            "a": { "servers": [{ "url": "http://10.0.0.5:8080/internal/v1" }] },
            "b": { "servers": [{ "url": "https://B.internal.example" }] },
            "plain": { "servers": [{ "url": "http://10.0.0.9" }] },
            "v6": { "servers": [{ "url": "http://[FD00::5]:9000/v6" }] },
            "label": { "servers": [{ "url": "http://users:8080" }] },
            "shared": { "servers": [
                { "url": "http://10.0.0.7:8001/one" },
                { "url": "http://10.0.0.7:8002/two" },
                { "url": "http://10.0.0.7:8002/two/deep" }
            ] },
            "named": { "servers": [
                { "url": "http://shared.internal:81/a" },
                { "url": "http://SHARED.internal.:82/b" }
            ] }
        },
        "routes": []
    });
    Config::from_json(&text.to_string()).unwrap()
}

const PUBLIC: &str = "https://api.example.com";

/// Runs `header: value` through the address hiding and compares with `want` (`None`: dropped,
/// `Some(v)`: sent as `v`; a kept value is written out in full).
fn check_hiding(cfg: &Config, public: &PublicSide<'_>, cases: &[(&str, &str, Option<&str>)]) {
    let all = cfg.origins.iter().flat_map(|o| o.servers.iter());
    let mut failures = Vec::new();
    for (name, value, want) in cases {
        let got = match Hiding::new(all.clone(), public).header(name, value) {
            Hidden::Keep => Some(value.to_string()),
            Hidden::Rewrite(v) => Some(v),
            Hidden::Drop => None,
        };
        if got.as_deref() != *want {
            failures.push(format!("{name}: {value:?}: got {got:?}, want {want:?}"));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn every_spelling_of_a_server_url_is_rewritten_to_the_public_origin() {
    let cfg = servers();
    let public = PublicSide {
        origin: PUBLIC,
        rewrite: &Rewrite::None,
    };
    let to = Some("https://api.example.com/x");
    let cases: &[(&str, &str, Option<&str>)] = &[
        // Absolute, network-path and backslash forms; the base path removed.
        ("location", "http://10.0.0.5:8080/internal/v1/x", to),
        ("location", "//10.0.0.5:8080/internal/v1/x", to),
        ("location", "/\\10.0.0.5:8080/internal/v1/x", to),
        ("location", "\\\\10.0.0.5:8080\\internal\\v1\\x", to),
        ("location", "\\/10.0.0.5:8080/internal/v1/x", to),
        ("location", "http:\\\\10.0.0.5:8080\\internal/v1/x", to),
        ("location", "HtTp:/10.0.0.5:8080/internal/v1/x", to),
        ("location", "http:10.0.0.5:8080/internal/v1/x", to), // another scheme than the client's
        ("location", "HTTP://10.0.0.5:8080/internal/v1/x", to),
        ("location", "https://10.0.0.5:8080/internal/v1/x", to),
        // Spaces, C0 controls, tabs and newlines, as the URL parser strips them.
        (
            "location",
            "  \u{1}//10.0.0.5:8080/internal/v1/x\u{1f} ",
            to,
        ),
        ("location", "/\t/10.0.0.5:8080/internal/v1/x", to),
        ("location", "//10.0.0.5:80\n80/internal/v1/x", to),
        // Userinfo, percent-encoded and non-decimal IPv4 hosts, a trailing dot, port spellings.
        ("location", "http://user:pw@10.0.0.5:8080/internal/v1/x", to),
        ("location", "http://a@10.0.0.5:8080/internal/v1/x", to),
        ("location", "http://%31%30.0.0.5:8080/internal/v1/x", to),
        ("location", "http://10%2E0%2E0%2E5:8080/internal/v1/x", to),
        ("location", "http://0xa.0.0.5:8080/internal/v1/x", to),
        ("location", "http://0XA.0X0.0.0x5:8080/internal/v1/x", to),
        ("location", "http://012.0.0.5:8080/internal/v1/x", to),
        ("location", "http://012.000.000.005:8080/internal/v1/x", to),
        (
            "location",
            "http://010.0.0.5:8080/internal/v1/x",
            Some("http://010.0.0.5:8080/internal/v1/x"),
        ), // octal: 8.0.0.5
        ("location", "http://167772165:8080/internal/v1/x", to),
        ("location", "http://0xa000005:8080/internal/v1/x", to),
        ("location", "http://10.5:8080/internal/v1/x", to),
        ("location", "http://10.0.5:8080/internal/v1/x", to),
        ("location", "http://10.0.0.5.:8080/internal/v1/x", to),
        ("location", "http://10.0.0.5:08080/internal/v1/x", to),
        // IPv6 literals embedding the server's IPv4 address.
        (
            "location",
            "http://[::ffff:10.0.0.5]:8080/internal/v1/x",
            to,
        ),
        ("location", "http://[::FFFF:A00:5]:8080/internal/v1/x", to),
        (
            "location",
            "http://[0:0:0:0:0:ffff:a00:5]:8080/internal/v1/x",
            to,
        ),
        ("location", "http://[::10.0.0.5]:8080/internal/v1/x", to),
        ("location", "http://[64:ff9b::a00:5]:8080/internal/v1/x", to),
        ("location", "http://[2002:a00:5::]:8080/internal/v1/x", to),
        ("location", "//[::ffff:a00:5]:8080/internal/v1/x", to),
        // Query and fragment kept; the base path itself is the root.
        (
            "location",
            "http://10.0.0.5:8080/internal/v1/x?a=1&b=%20#f",
            Some("https://api.example.com/x?a=1&b=%20#f"),
        ),
        (
            "location",
            "http://10.0.0.5:8080/internal/v1",
            Some("https://api.example.com/"),
        ),
        // Another port, the default port: the server's machine all the same; the base path is
        // removed only when the URL is under it.
        (
            "location",
            "http://10.0.0.5:9999/elsewhere",
            Some("https://api.example.com/elsewhere"),
        ),
        ("location", "http://10.0.0.5/internal/v1/x", to),
        (
            "location",
            "http://10.0.0.5:8080/internal/v10/x",
            Some("https://api.example.com/internal/v10/x"),
        ),
        // A name host: any case, trailing dot, default port written or not, another scheme.
        ("location", "https://b.internal.example/x", to),
        ("location", "https://B.INTERNAL.EXAMPLE./x", to),
        ("location", "https://b.internal.example:443/x", to),
        ("location", "//b.internal.example/x", to),
        ("location", "http://b.internal.example:8443/x", to),
        ("location", "https://b%2Einternal.example/x", to),
        ("content-location", "https://b.internal.example/x", to),
        ("content-location", "/\\B.internal.example/x", to),
        // A server without a port (80) and a single-label host.
        ("location", "http://10.0.0.9/x", to),
        ("location", "http://10.0.0.9:80/x", to),
        ("location", "//10.0.0.9/x", to), // https, 443: the machine still
        ("location", "http://users:8080/x", to),
        ("location", "//USERS:8080/x", to),
        // An IPv6 server: compressed, expanded, upper case.
        ("location", "http://[fd00::5]:9000/v6/x", to),
        ("location", "http://[FD00:0:0:0:0:0:0:5]:9000/v6/x", to),
        ("location", "//[fd00::0:0005]:9000/v6/x", to),
        // Not a server: left alone.
        ("location", "/relative/path", Some("/relative/path")),
        ("location", "x/y", Some("x/y")),
        ("location", "?a=1", Some("?a=1")),
        (
            "location",
            "https://api.example.com/x",
            Some("https://api.example.com/x"),
        ),
        (
            "location",
            "//api.example.com/x",
            Some("//api.example.com/x"),
        ),
        (
            "location",
            "https://id.example.org/login",
            Some("https://id.example.org/login"),
        ),
        (
            "location",
            "http://10.0.0.50:8080/x",
            Some("http://10.0.0.50:8080/x"),
        ),
        (
            "location",
            "http://110.0.0.5:8080/x",
            Some("http://110.0.0.5:8080/x"),
        ),
        (
            "location",
            "http://a.b.internal.example/x",
            Some("http://a.b.internal.example/x"),
        ),
        (
            "location",
            "http://b.internal.example.com/x",
            Some("http://b.internal.example.com/x"),
        ),
        (
            "location",
            "http://[fd00::50]:9000/x",
            Some("http://[fd00::50]:9000/x"),
        ),
        (
            "location",
            "mailto:ops@example.org",
            Some("mailto:ops@example.org"),
        ),
        // Naming a server with no public equivalent, unreadable, or naming one inside: dropped.
        ("location", "ws://10.0.0.5:8080/socket", None),
        ("location", "ftp://[::ffff:10.0.0.5]/f", None),
        ("location", "file://10.0.0.5/etc", None),
        ("location", "http://[::1", None),
        ("location", "http://10\u{3002}0\u{3002}0\u{3002}5/x", None),
        ("location", "/next?to=http://10.0.0.5:8080/x", None),
        (
            "location",
            "/next?to=http%3A%2F%2F10.0.0.5%3A8080%2Fx",
            None,
        ),
        (
            "location",
            "/next?to=http%253A%252F%252F10.0.0.5%253A8080",
            None,
        ),
        (
            "location",
            "https://api.example.com/?u=b.internal.example",
            None,
        ),
        (
            "location",
            "http://10.0.0.5:8080/x?back=//b.internal.example/",
            None,
        ),
        ("location", "javascript:fetch('//10.0.0.5:8080/')", None),
        ("location", "foo://10.0.0.5:8080/x", None),
    ];
    check_hiding(&cfg, &public, cases);
}

#[test]
fn servers_sharing_a_host_are_told_apart_by_port_and_base_path() {
    let cfg = servers();
    let public = PublicSide {
        origin: PUBLIC,
        rewrite: &Rewrite::None,
    };
    let cases: &[(&str, &str, Option<&str>)] = &[
        (
            "location",
            "http://10.0.0.7:8001/one/x",
            Some("https://api.example.com/x"),
        ),
        (
            "location",
            "http://10.0.0.7:8002/two/x",
            Some("https://api.example.com/x"),
        ),
        (
            "location",
            "http://10.0.0.7:8002/two/deep/x",
            Some("https://api.example.com/x"),
        ),
        (
            "location",
            "http://10.0.0.7:8002/two",
            Some("https://api.example.com/"),
        ),
        // The port names the server at 8001, whose base the path is not under: kept whole.
        (
            "location",
            "http://10.0.0.7:8001/two/x",
            Some("https://api.example.com/two/x"),
        ),
        // No port matches: the best base path among the host's servers.
        (
            "location",
            "http://10.0.0.7:9999/two/deep/x",
            Some("https://api.example.com/x"),
        ),
        (
            "location",
            "http://10.0.0.7/one/x",
            Some("https://api.example.com/x"),
        ),
        (
            "location",
            "http://shared.internal:81/a/x",
            Some("https://api.example.com/x"),
        ),
        (
            "location",
            "http://Shared.Internal.:82/b/x",
            Some("https://api.example.com/x"),
        ),
        (
            "location",
            "http://shared.internal:82/a/x",
            Some("https://api.example.com/a/x"),
        ),
    ];
    check_hiding(&cfg, &public, cases);
}

#[test]
fn a_stripped_prefix_is_put_back() {
    let cfg = servers();
    let strip = Rewrite::StripPrefix("/api".into());
    let public = PublicSide {
        origin: PUBLIC,
        rewrite: &strip,
    };
    let cases: &[(&str, &str, Option<&str>)] = &[
        (
            "location",
            "http://10.0.0.5:8080/internal/v1/users/8?x=1#f",
            Some("https://api.example.com/api/users/8?x=1#f"),
        ),
        (
            "location",
            "http://10.0.0.5:8080/internal/v1",
            Some("https://api.example.com/api"),
        ),
        (
            "location",
            "//10.0.0.5:8080/internal/v1/",
            Some("https://api.example.com/api"),
        ),
        ("location", "/users/8", Some("/users/8")),
    ];
    check_hiding(&cfg, &public, cases);
}

#[test]
fn refresh_and_link_urls_are_rewritten_the_same_way() {
    let cfg = servers();
    let public = PublicSide {
        origin: PUBLIC,
        rewrite: &Rewrite::None,
    };
    let cases: &[(&str, &str, Option<&str>)] = &[
        ("refresh", "0; url=http://10.0.0.5:8080/internal/v1/x", Some("0; url=https://api.example.com/x")),
        ("refresh", "5;URL='//10.0.0.5:8080/internal/v1/x'", Some("5;URL='https://api.example.com/x'")),
        ("refresh", "0, url=\"/\\10.0.0.5:8080/internal/v1/x\"", Some("0, url=\"https://api.example.com/x\"")),
        ("refresh", "  3  ;  Url = http://[::ffff:a00:5]:8080/internal/v1/x", Some("  3  ;  Url = https://api.example.com/x")),
        ("refresh", "0;http://10.0.0.5:8080/internal/v1/x", Some("0;https://api.example.com/x")),
        ("refresh", "1.5 url=//b.internal.example/x", Some("1.5 url=https://api.example.com/x")),
        ("refresh", "0; uRl='\\\\10.0.0.5:8080\\internal\\v1\\x' trailing", Some("0; uRl='https://api.example.com/x' trailing")),
        ("refresh", "0; url=/local", Some("0; url=/local")),
        ("refresh", "5", Some("5")),
        ("refresh", "0; url=https://id.example.org/", Some("0; url=https://id.example.org/")),
        // Not a refresh a browser follows, or a URL the steps read differently: the text
        // still names a server, so the header goes.
        ("refresh", "x; url=http://10.0.0.5:8080/", None),
        ("refresh", "0; urx=http://10.0.0.5:8080/", None),
        ("refresh", "0; url=ws://10.0.0.5:8080/", None),
        (
            "link",
            "<http://10.0.0.5:8080/internal/v1/x>; rel=next",
            Some("<https://api.example.com/x>; rel=next"),
        ),
        (
            "link",
            "</a>; rel=prev, <//10.0.0.5:8080/internal/v1/b>; rel=next, <https://cdn.example/c>; rel=preload",
            Some("</a>; rel=prev, <https://api.example.com/b>; rel=next, <https://cdn.example/c>; rel=preload"),
        ),
        (
            "link",
            "<http://[::FFFF:10.0.0.5]:8080/internal/v1/x>; rel=\"a, <b>\", </\\B.internal.example/y>",
            Some("<https://api.example.com/x>; rel=\"a, <b>\", <https://api.example.com/y>"),
        ),
        ("link", "</x>; rel=next", Some("</x>; rel=next")),
        ("link", "</x>; title=\"<http://10.0.0.5:8080/>\"", None),
        ("link", "<http://[::1>; rel=x", None),
        ("link", "<http://10.0.0.5:8080/internal/v1/x", None),
    ];
    check_hiding(&cfg, &public, cases);
}

#[test]
fn any_other_header_naming_a_server_is_dropped() {
    let cfg = servers();
    let public = PublicSide {
        origin: PUBLIC,
        rewrite: &Rewrite::None,
    };
    let kept = |v: &'static str| Some(v);
    let cases: &[(&str, &str, Option<&str>)] = &[
        ("x-backend", "10.0.0.5:8080", None),
        ("x-backend", "10.0.0.5", None),
        ("x-backend", "upstream=10.0.0.5;", None),
        ("x-backend", "ip:10.0.0.5", None),
        ("x-backend", "10.0.0.5.", None),
        ("x-backend", "012.000.000.005", None),
        ("x-backend", "010.0.0.5", kept("010.0.0.5")), // octal: 8.0.0.5
        ("x-backend", "0xa.0.0.5:8080", None),
        ("x-backend", "10.5:8080", None),
        ("x-backend", "http://167772165/", None),
        ("x-backend", "user@0xa000005", None),
        ("x-backend", "10%2E0%2E0%2E5", None),
        ("x-backend", "10%252E0%252E0%252E5", None),
        ("x-backend", "[::ffff:10.0.0.5]:8080", None),
        ("x-backend", "::ffff:a00:5", None),
        ("x-backend", "::FFFF:10.0.0.5", None),
        ("x-backend", "::ffff:a00:5:8080", None),
        ("x-backend", "2002:a00:5::1", None),
        ("x-backend", "[fd00::5]:9000", None),
        ("x-backend", "fd00:0:0::5", None),
        ("x-backend", "B.INTERNAL.EXAMPLE", None),
        ("x-backend", "users:8080", None),
        ("x-backend", "http://USERS/x", None),
        (
            "set-cookie",
            "a=1; Domain=.b.internal.example; Path=/",
            None,
        ),
        ("set-cookie", "a=1; Domain=B.Internal.Example.", None),
        ("access-control-allow-origin", "http://10.0.0.5:8080", None),
        (
            "content-security-policy",
            "default-src 'self'; report-uri http://10.0.0.5:8080/csp",
            None,
        ),
        // Bounded: other addresses and words are not servers.
        ("x-backend", "10.0.0.50", kept("10.0.0.50")),
        ("x-backend", "110.0.0.5", kept("110.0.0.5")),
        ("x-backend", "10.0.0.5x", kept("10.0.0.5x")),
        ("x-backend", "host-10.0.0.5", kept("host-10.0.0.5")),
        (
            "x-backend",
            "a.b.internal.example",
            kept("a.b.internal.example"),
        ),
        (
            "x-backend",
            "b.internal.example.com",
            kept("b.internal.example.com"),
        ),
        ("x-backend", "fd00::50", kept("fd00::50")),
        ("x-version", "10.5", kept("10.5")),
        ("vary", "Users, Origin", kept("Users, Origin")),
        (
            "date",
            "Mon, 01 Jan 2024 10:00:05 GMT",
            kept("Mon, 01 Jan 2024 10:00:05 GMT"),
        ),
        (
            "content-type",
            "application/json; charset=utf-8",
            kept("application/json; charset=utf-8"),
        ),
        (
            "content-disposition",
            "attachment; filename*=UTF-8''a%20b.txt",
            kept("attachment; filename*=UTF-8''a%20b.txt"),
        ),
        (
            "x-public",
            "https://api.example.com/x",
            kept("https://api.example.com/x"),
        ),
        // Odd brackets end the scan like anything else.
        ("x-odd", "[", kept("[")),
        ("x-odd", "a[b[[c]]:[:]", kept("a[b[[c]]:[:]")),
        ("x-odd", "]::[", kept("]::[")),
        ("x-odd", "[10.0.0.5", None),
        ("x-odd", "[10.0.0.5]", None),
    ];
    check_hiding(&cfg, &public, cases);
}

#[test]
fn the_public_authority_is_not_a_server_even_on_a_servers_host() {
    // The test set-up: the gateway and its origins all on 127.0.0.1, on different ports.
    let text = serde_json::json!({
        "origins": { "o": { "servers": [{ "url": "http://127.0.0.1:9000/base" }] } },
        "routes": []
    });
    let cfg = Config::from_json(&text.to_string()).unwrap();
    let public = PublicSide {
        origin: "http://127.0.0.1:8787",
        rewrite: &Rewrite::None,
    };
    let cases: &[(&str, &str, Option<&str>)] = &[
        (
            "location",
            "http://127.0.0.1:8787/x",
            Some("http://127.0.0.1:8787/x"),
        ),
        ("location", "//127.0.0.1:8787/x", Some("//127.0.0.1:8787/x")),
        (
            "location",
            "http://[::ffff:127.0.0.1]:8787/x",
            Some("http://[::ffff:127.0.0.1]:8787/x"),
        ),
        (
            "location",
            "http://127.0.0.1:9000/base/x",
            Some("http://127.0.0.1:8787/x"),
        ),
        (
            "location",
            "http://[::ffff:7f00:1]:9000/base/x",
            Some("http://127.0.0.1:8787/x"),
        ),
        (
            "location",
            "http://0x7f.1:9000/base/x",
            Some("http://127.0.0.1:8787/x"),
        ),
        (
            "location",
            "http://127.0.0.1/x",
            Some("http://127.0.0.1:8787/x"),
        ),
        (
            "location",
            "http://localhost:9000/x",
            Some("http://localhost:9000/x"),
        ),
        ("x-backend", "127.0.0.1:8787", Some("127.0.0.1:8787")),
        (
            "x-backend",
            "[::ffff:127.0.0.1]:8787",
            Some("[::ffff:127.0.0.1]:8787"),
        ),
        ("x-backend", "127.0.0.1:9000", None),
        ("x-backend", "127.0.0.1", None),
        ("x-backend", "127.0.0.1:8787 127.0.0.1:9000", None),
    ];
    check_hiding(&cfg, &public, cases);
}

#[test]
fn the_url_ipv4_reading_agrees_with_the_url_parser() {
    for text in [
        "127.0.0.1",
        "0x7f.1",
        "0177.0.0.1",
        "2130706433",
        "0x7f000001",
        "127.1",
        "127.0.1",
        "1.2.3.4.",
        "0x",
        "0x.0x.0",
        "00",
        "08",
        "0x7g",
        "256.1",
        "1.256.1.1",
        "1.2.3.4.5",
        "4294967295",
        "4294967296",
        "0xffffffff",
        "0x100000000",
        "037777777777",
        "1..2",
        "",
        "1.2.3.0x100",
        "1.2.65535",
        "1.2.65536",
        "1.16777215",
        "1.16777216",
    ] {
        let parsed = match url::Host::parse(text) {
            Ok(url::Host::Ipv4(v4)) => Some(v4),
            _ => None,
        };
        assert_eq!(crate::addr::parse_url_ipv4(text), parsed, "{text:?}");
    }
}

#[test]
fn the_client_response_hides_the_origin() {
    let cfg = servers();
    let all = cfg.origins.iter().flat_map(|o| o.servers.iter());
    let from_origin = h(&[
        ("content-type", "text/plain"),
        ("server", "nginx/1.2"),
        ("x-powered-by", "PHP"),
        ("via", "1.1 internal"),
        ("connection", "x-internal"),
        ("x-internal", "secret"),
        ("keep-alive", "timeout=5"),
        ("transfer-encoding", "chunked"),
        ("location", "http://10.0.0.5:8080/internal/v1/next"),
        ("content-location", "//b.internal.example/doc"),
        ("refresh", "0; url=/\\10.0.0.5:8080/internal/v1/r"),
        (
            "link",
            "</a>; rel=prev, <http://[::ffff:a00:5]:8080/internal/v1/b>; rel=next",
        ),
        ("x-request-id", "origin-id"),
        ("set-cookie", "a=1"),
        ("set-cookie", "b=2; Domain=b.internal.example"),
        ("x-backend", "10.0.0.5:8080"),
        ("x-debug", "1"),
    ]);
    let public = PublicSide {
        origin: "https://api.example.com",
        rewrite: &Rewrite::None,
    };
    // The route's own rules apply after the hiding: an operator's value is sent as written.
    let r = rules(
        &[("x-route", "{route}"), ("x-upstream", "users:8080")],
        &[],
        &["x-debug"],
    );
    let out = response_plan(&from_origin, all, &public, "rid", &r, lookup);
    assert_eq!(
        out,
        h(&[
            ("content-type", "text/plain"),
            ("location", "https://api.example.com/next"),
            ("content-location", "https://api.example.com/doc"),
            ("refresh", "0; url=https://api.example.com/r"),
            (
                "link",
                "</a>; rel=prev, <https://api.example.com/b>; rel=next"
            ),
            ("set-cookie", "a=1"),
            ("x-route", "r"),
            ("x-upstream", "users:8080"),
            ("x-request-id", "rid"),
        ])
    );
}

#[test]
fn client_copies_of_claim_headers_are_dropped_and_verified_claims_set_last() {
    let claim_headers = vec!["x-user-id".to_string(), "x-user-email".to_string()];
    let forward = vec![("x-user-id".to_string(), "alice".to_string())];
    let incoming = h(&[
        ("x-user-id", "mallory"),
        ("x-user-email", "m@evil.example"),
        ("accept", "*/*"),
    ]);
    // Public route: copies dropped, nothing forwarded.
    let public = Forwarding {
        claim_headers: &claim_headers,
        ..FWD
    };
    let out = request_plan(&incoming, &public, &HeaderRules::default(), lookup);
    assert!(
        !out.iter().any(|(n, _)| n.starts_with("x-user-")),
        "{out:?}"
    );
    // Authenticated: the verified value wins even over a route rule setting the same header.
    let authed = Forwarding {
        claim_headers: &claim_headers,
        forward_claims: &forward,
        ..FWD
    };
    let r = rules(&[("x-user-id", "from-rule")], &[], &[]);
    let out = request_plan(&incoming, &authed, &r, lookup);
    let ids: Vec<&str> = out
        .iter()
        .filter(|(n, _)| n == "x-user-id")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(ids, ["alice"]);
    assert!(!out.iter().any(|(n, _)| n == "x-user-email"));
}
