/* Policy loading: hostile and malformed policies first, each with the exact
 * message (FILE:LINE:COLUMN) a user sees; then what a valid policy turns
 * into; then placeholder derivation. Fixtures live in data/policy/ (the
 * test runs in tests/unit). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "policy/policy.h"

#define V "version: 1\n"
#define AWS_CRED \
	"credentials:\n  s3:\n    kind: aws\n    access_key_id: {from: env:A}\n    secret_access_key: {from: env:B}\n"
#define CREDS "credentials:\n  a: {from: env:A}\n  b: {from: env:B}\n"
#define ROUTE V CREDS "routes:\n  - host: api.example.com\n"

struct bad_case {
	const char *yaml;
	size_t len; /* 0: strlen(yaml) */
	const char *error;
};

#define EXPECTED \
	"(expected bearer, basic, swap, sigv4, {basic: USER}, {header: NAME, value: TEMPLATE} or {query: PARAM})"

static const struct bad_case bad[] = {
	/* ---- bytes and YAML structure ---- */
	{ "", 0, "policy.yaml:1:1: policy is empty (it starts with version: 1)" },
	{ "# only a comment\n", 0, "policy.yaml:1:1: policy is empty (it starts with version: 1)" },
	{ "~\n", 0, "policy.yaml:1:1: policy is empty (it starts with version: 1)" },
	{ V "\0", 12, "policy.yaml:2:1: NUL byte in policy" },
	{ "version: 1 # caf\xc3\n", 0, "policy.yaml:1:17: invalid UTF-8 in policy" },
	{ "version: 1 # \xc0\xaf overlong\n", 0, "policy.yaml:1:14: invalid UTF-8 in policy" },
	{ "version: 1 # \xed\xa0\x80 surrogate\n", 0, "policy.yaml:1:14: invalid UTF-8 in policy" },
	{ V "\r\naudit: x\x01\n", 0, "policy.yaml:3:9: control character U+0001 in policy" },
	{ V "audit: \"\xc2\x80\"\n", 0, "policy.yaml:2:9: control character U+0080 in policy" },
	{ V "routes: [\n", 0,
	  "policy.yaml:3:1: invalid YAML: did not find expected node content (while parsing a flow node at line 3)" },
	{ V "routes:\n  - host: a\n   port: 1\n", 0,
	  "policy.yaml:4:4: invalid YAML: did not find expected '-' indicator (while parsing a block collection at "
	  "line 3)" },
	{ V "audit: \"x\n", 0,
	  "policy.yaml:3:1: invalid YAML: found unexpected end of stream (while scanning a quoted scalar at line 2)" },
	{ V "routes:\n  - host: *.example.com\n", 0,
	  "policy.yaml:3:12: invalid YAML: did not find expected alphabetic or numeric character "
	  "(while scanning an alias at line 3; a value that starts with '*' must be quoted, as in "
	  "host: \"*.example.com\")" },
	{ V "---\n" V, 0, "policy.yaml:2:1: a policy is a single YAML document (found a second \"---\")" },
	{ "- version: 1\n", 0, "policy.yaml:1:1: policy must be a mapping that starts with version: 1" },
	{ "version\n", 0, "policy.yaml:1:1: policy must be a mapping that starts with version: 1" },
	{ V "? [a]\n: b\n", 0, "policy.yaml:2:3: mapping keys must be plain strings" },
	/* billion laughs: refused at the first anchor, nothing is expanded */
	{ V "sandbox:\n  env:\n    a: &a [x, x, x, x, x, x, x, x, x]\n"
	    "    b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
	    "    c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\n",
	  0, "policy.yaml:4:8: anchors are not allowed in a policy" },
	{ V "routes: *r\n", 0, "policy.yaml:2:9: aliases are not allowed in a policy" },
	{ V "audit: !!str x\n", 0, "policy.yaml:2:8: tags are not allowed in a policy" },
	{ V "audit: !<tag:yaml.org,2002:str> x\n", 0, "policy.yaml:2:8: tags are not allowed in a policy" },
	/* ---- top level ---- */
	{ "routes: []\n", 0, "policy.yaml:1:1: policy has no version: (this keyward reads version: 1)" },
	{ "version: 2\n", 0, "policy.yaml:1:10: unsupported policy version \"2\" (this keyward reads version 1)" },
	{ "version: 1.0\n", 0, "policy.yaml:1:10: unsupported policy version \"1.0\" (this keyward reads version 1)" },
	{ "version: [1]\n", 0, "policy.yaml:1:10: unsupported policy version \"?\" (this keyward reads version 1)" },
	{ V "version: 1\n", 0, "policy.yaml:2:1: duplicate key \"version\" (first at line 1)" },
	{ V "rotues: []\n", 0, "policy.yaml:2:1: unknown key \"rotues\" in policy" },
	{ V "\"\\e[31mred\": 1\n", 0, "policy.yaml:2:1: unknown key \"?[31mred\" in policy" },
	{ V "\"version\\0\": 1\n", 0, "policy.yaml:2:1: unknown key \"version\" in policy" },
	{ V "audit:\n", 0, "policy.yaml:2:7: audit: expected a string, found nothing" },
	{ V "audit: \"\"\n", 0, "policy.yaml:2:8: audit: is empty" },
	{ V "upstream_ca: [a]\n", 0, "policy.yaml:2:14: upstream_ca: expected a string, found a sequence" },
	{ V "audit: \"a\\0b\"\n", 0, "policy.yaml:2:8: audit: NUL character in string" },
	{ V "sandbox: [a]\n", 0, "policy.yaml:2:10: sandbox: expected a mapping, found a sequence" },
	{ V "sandbox: {network: true}\n", 0, "policy.yaml:2:11: unknown key \"network\" in sandbox" },
	{ V "sandbox: {env: {A: 1, A: 2}}\n", 0, "policy.yaml:2:23: duplicate key \"A\" (first at line 2)" },
	/* ---- limits ---- */
	{ V "limits: 5\n", 0, "policy.yaml:2:9: limits: expected a mapping, found a string" },
	{ V "limits: {max_header: 1}\n", 0, "policy.yaml:2:10: unknown key \"max_header\" in limits" },
	{ V "limits: {max_headers: 0}\n", 0, "policy.yaml:2:23: max_headers: expected an integer from 1 to 1000" },
	{ V "limits: {max_headers: 1001}\n", 0, "policy.yaml:2:23: max_headers: expected an integer from 1 to 1000" },
	{ V "limits: {max_headers: -5}\n", 0, "policy.yaml:2:23: max_headers: expected an integer from 1 to 1000" },
	{ V "limits: {max_headers: 0x10}\n", 0, "policy.yaml:2:23: max_headers: expected an integer from 1 to 1000" },
	{ V "limits: {max_headers: 99999999999999999999999}\n", 0,
	  "policy.yaml:2:23: max_headers: expected an integer from 1 to 1000" },
	{ V "limits: {max_header_bytes: 512}\n", 0,
	  "policy.yaml:2:28: max_header_bytes: expected a size from 1024 to 1048576 bytes, such as 65536, 512KiB or "
	  "10MB" },
	{ V "limits: {max_header_bytes: 2MiB}\n", 0,
	  "policy.yaml:2:28: max_header_bytes: expected a size from 1024 to 1048576 bytes, such as 65536, 512KiB or "
	  "10MB" },
	{ V "limits: {header_timeout: 10}\n", 0,
	  "policy.yaml:2:26: header_timeout: expected a duration from 1ms to 24h with a unit, such as 500ms, 10s or "
	  "2m" },
	{ V "limits: {idle_timeout: 0s}\n", 0,
	  "policy.yaml:2:24: idle_timeout: expected a duration from 1ms to 24h with a unit, such as 500ms, 10s or 2m" },
	{ V "limits: {upstream_timeout: 0s}\n", 0,
	  "policy.yaml:2:28: upstream_timeout: expected a duration from 1ms to 24h with a unit, such as 500ms, 10s or "
	  "2m" },
	{ V "limits: {idle_timeout: 25h}\n", 0,
	  "policy.yaml:2:24: idle_timeout: expected a duration from 1ms to 24h with a unit, such as 500ms, 10s or 2m" },
	{ V "limits: {max_body: 10XB}\n", 0,
	  "policy.yaml:2:20: max_body: expected a size from 0 to 18446744073709551615 bytes, such as 65536, 512KiB or "
	  "10MB" },
	{ V "limits: {max_body: 20000000000GiB}\n", 0,
	  "policy.yaml:2:20: max_body: expected a size from 0 to 18446744073709551615 bytes, such as 65536, 512KiB or "
	  "10MB" },
	/* ---- credentials ---- */
	{ V "credentials: [a]\n", 0, "policy.yaml:2:14: credentials: expected a mapping, found a sequence" },
	{ V "credentials:\n  \"gh hub\": {from: env:X}\n", 0,
	  "policy.yaml:3:3: invalid credential name \"gh hub\" (1 to 64 of A-Z a-z 0-9 _ . -)" },
	{ V "credentials:\n  a234567890123456789012345678901234567890123456789012345678901234x: {from: env:X}\n", 0,
	  "policy.yaml:3:3: invalid credential name "
	  "\"a234567890123456789012345678901234567890123456789012345678901234...\" (1 to 64 of A-Z a-z 0-9 _ . -)" },
	{ V "credentials:\n  a: env:X\n", 0,
	  "policy.yaml:3:6: credential \"a\": expected a mapping with from:, found a string" },
	{ V "credentials:\n  gh: {env: GH}\n", 0,
	  "policy.yaml:3:7: credential \"gh\" has no from: (env:VAR, file:PATH, vault:NAME or exec:COMMAND)" },
	{ V "credentials:\n  gh: {from: \"vault:\"}\n", 0,
	  "policy.yaml:3:14: from: vault: needs a secret name of 1 to 128 characters of A-Z a-z 0-9 _ . -" },
	{ V "credentials:\n  gh: {from: vault:a/b}\n", 0,
	  "policy.yaml:3:14: from: vault: needs a secret name of 1 to 128 characters of A-Z a-z 0-9 _ . -" },
	{ V "credentials:\n  gh: {from: \"vault:a b\"}\n", 0,
	  "policy.yaml:3:14: from: vault: needs a secret name of 1 to 128 characters of A-Z a-z 0-9 _ . -" },
	{ V "credentials:\n  gh: {from: vault:../x}\n", 0,
	  "policy.yaml:3:14: from: vault: needs a secret name of 1 to 128 characters of A-Z a-z 0-9 _ . -" },
	{ V "credentials:\n  gh: {from: vault:"
	    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	    "aaaaaaaaaaaaaaaaaaaaaaaaa}\n",
	  0, "policy.yaml:3:14: from: vault: needs a secret name of 1 to 128 characters of A-Z a-z 0-9 _ . -" },
	{ V "credentials:\n  gh: {from: \"exec:\"}\n", 0,
	  "policy.yaml:3:14: from: exec: needs a command of 1 to 4096 bytes" },
	{ V "credentials:\n  gh: {from: \"exec:op read x\\0\"}\n", 0,
	  "policy.yaml:3:14: from: NUL character in string" },
	{ V "credentials:\n  gh: {from: ghp_realtoken}\n", 0,
	  "policy.yaml:3:14: from: unknown credential source (expected env:VAR, file:PATH, vault:NAME or "
	  "exec:COMMAND)" },
	{ V "credentials:\n  gh: {from: \"env:\"}\n", 0,
	  "policy.yaml:3:14: from: env: needs a variable name matching [A-Za-z_][A-Za-z0-9_]*" },
	{ V "credentials:\n  gh: {from: env:1X}\n", 0,
	  "policy.yaml:3:14: from: env: needs a variable name matching [A-Za-z_][A-Za-z0-9_]*" },
	{ V "credentials:\n  gh:\n    from: \"file:\"\n", 0, "policy.yaml:4:11: from: file: needs a path" },
	{ V "credentials:\n  gh: {from: env:A, envv: X}\n", 0,
	  "policy.yaml:3:21: unknown key \"envv\" in credential \"gh\"" },
	{ V "credentials:\n  gh: {from: env:A, env: 9X}\n", 0,
	  "policy.yaml:3:26: env: invalid variable name \"9X\" (expected [A-Za-z_][A-Za-z0-9_]*)" },
	{ V "credentials:\n  s3:\n    kind: aws\n    access_key_id: {from: env:A}\n", 0,
	  "policy.yaml:4:5: credential \"s3\" (kind aws) needs secret_access_key: {from: ...}" },
	{ V AWS_CRED "routes:\n  - {host: s3.example.com, credential: s3, inject: bearer}\n", 0,
	  "policy.yaml:8:52: credential \"s3\" is of kind aws: its routes re-sign requests (inject: sigv4, or no "
	  "inject:)" },
	{ V "credentials:\n  k: {from: env:K}\nroutes:\n  - {host: a.example.com, credential: k, inject: sigv4}\n", 0,
	  "policy.yaml:5:50: inject: sigv4 needs a credential of kind aws (\"k\" is secret)" },
	{ V "credentials:\n  crm:\n    kind: oauth2_client_credentials\n", 0,
	  "policy.yaml:4:5: credential \"crm\" (kind oauth2_client_credentials) needs client_id: {from: ...}" },
	{ V "credentials:\n  crm:\n    kind: oauth2_client_credentials\n    client_id: {from: env:A}\n    "
	    "client_secret: {from: env:B}\n",
	  0, "policy.yaml:4:5: credential \"crm\" (kind oauth2_client_credentials) needs token_url:" },
	{ V "credentials:\n  crm:\n    kind: oauth2_client_credentials\n    client_id: {from: env:A}\n    "
	    "client_secret: {from: env:B}\n    token_url: http://a.example/t\n",
	  0, "policy.yaml:7:16: token_url: expected an https:// URL (token endpoints are reached over verified TLS)" },
	{ V "credentials:\n  crm:\n    kind: oauth2_client_credentials\n    client_id: {from: env:A}\n    "
	    "client_secret: {from: env:B}\n    token_url: https://u:p@a.example/t\n",
	  0, "policy.yaml:7:16: token_url: user information in a URL is not allowed" },
	{ V "credentials:\n  crm:\n    kind: oauth2_client_credentials\n    client_id: {from: env:A}\n    "
	    "client_secret: {from: env:B}\n    token_url: https://a.example:0/t\n",
	  0, "policy.yaml:7:16: token_url: invalid port in URL" },
	{ V "credentials:\n  crm:\n    kind: oauth2_client_credentials\n    client_id: {from: env:A}\n    "
	    "client_secret: {from: env:B}\n    token_url: https://a_b.example/t\n",
	  0, "policy.yaml:7:16: host: invalid character '_' in \"a_b.example\" (allowed: a-z 0-9 . -)" },
	{ V "credentials:\n  crm:\n    kind: oauth2_client_credentials\n    client_id: {from: env:A}\n    "
	    "client_secret: {from: env:B}\n    token_url: \"https://a.example/t t\"\n",
	  0, "policy.yaml:7:16: token_url: invalid character in URL" },
	{ V "credentials:\n  crm:\n    kind: oauth2_client_credentials\n    client_id: {from: env:A}\n    "
	    "client_secret: {from: env:B}\n    token_url: https://a.example/t\n    scopes: []\n",
	  0, "policy.yaml:8:13: scopes: expected 1 to 64 scope" },
	{ V "credentials:\n  crm:\n    kind: oauth2_client_credentials\n    client_id: {from: env:A}\n    "
	    "client_secret: {from: env:B}\n    token_url: https://a.example/t\n    scopes: [a, a]\n",
	  0, "policy.yaml:8:17: scopes: \"a\" is listed twice" },
	{ V "credentials:\n  crm:\n    kind: oauth2_client_credentials\n    client_id: {from: env:A}\n    "
	    "client_secret: {from: env:B}\n    token_url: https://a.example/t\n    scopes: ['a b']\n",
	  0, "policy.yaml:8:14: scopes: \"a b\" is not a valid scope" },
	{ V "credentials:\n  crm:\n    kind: oauth2_client_credentials\n    client_id: {from: env:A}\n    "
	    "client_secret: {from: env:B}\n    token_url: https://a.example/t\n    client_auth: jwt\n",
	  0, "policy.yaml:8:18: client_auth: expected basic or post" },
	{ V "credentials:\n  crm:\n    kind: oauth2_client_credentials\n    client_id: {from: env:A}\n    "
	    "client_secret: {from: env:B}\n    token_url: https://127.0.0.1/t\n    allow_private: false\n",
	  0,
	  "policy.yaml:8:20: allow_private: false contradicts host \"127.0.0.1\", which names a loopback or private "
	  "address" },
	{ V "credentials:\n  crm:\n    kind: oauth2_client_credentials\n    client_id: {from: env:A}\n    "
	    "client_secret: {from: env:B}\n    token_url: https://a.example/t\n    app_id: 1\n",
	  0, "policy.yaml:8:5: unknown key \"app_id\" in credential \"crm\" (kind oauth2_client_credentials)" },
	{ V "credentials:\n  r:\n    kind: oauth2_refresh\n    refresh_token: {from: env:R}\n    token_url: "
	    "https://a.example/t\n    audience: x\n",
	  0, "policy.yaml:7:5: unknown key \"audience\" in credential \"r\" (kind oauth2_refresh)" },
	{ V "credentials:\n  gh:\n    kind: github_app\n    private_key: {from: file:k}\n    app_id: 1\n", 0,
	  "policy.yaml:4:5: credential \"gh\" (kind github_app) needs app_id: and installation_id:" },
	{ V "credentials:\n  gh:\n    kind: github_app\n    private_key: {from: file:k}\n    app_id: 01\n    "
	    "installation_id: 2\n",
	  0, "policy.yaml:6:13: app_id: expected a positive decimal number" },
	{ V "credentials:\n  gh:\n    kind: github_app\n    private_key: {from: file:k}\n    app_id: 1\n    "
	    "installation_id: 2\n    repositories: [acme/app]\n",
	  0, "policy.yaml:8:20: repositories: \"acme/app\" is not a valid repository name" },
	{ V "credentials:\n  gh:\n    kind: github_app\n    private_key: {from: file:k}\n    app_id: 1\n    "
	    "installation_id: 2\n    permissions: {contents: all}\n",
	  0, "policy.yaml:8:29: permissions: contents: expected read, write or admin" },
	{ V "credentials:\n  gh:\n    kind: github_app\n    private_key: {from: file:k}\n    app_id: 1\n    "
	    "installation_id: 2\n    permissions: [contents]\n",
	  0, "policy.yaml:8:18: permissions: expected a mapping such as {contents: read}, found a sequence" },
	{ V "credentials:\n  x: {kind: magic, from: env:A}\n", 0,
	  "policy.yaml:3:13: credential \"x\": unknown kind \"magic\" (expected secret, aws, "
	  "oauth2_client_credentials, oauth2_refresh, github_app)" },
	{ V "credentials:\n  x: {from: env:A, placeholder: short}\n", 0,
	  "policy.yaml:3:33: placeholder: must be 16 to 256 characters long" },
	{ V "credentials:\n  x: {from: env:A, placeholder: \"abcdefgh ijklmnopq\"}\n", 0,
	  "policy.yaml:3:33: placeholder: only printable ASCII without spaces, quotes or backslashes" },
	{ V "credentials:\n  x: {from: env:A, placeholder: \"abcdefgh'ijklmnopq\"}\n", 0,
	  "policy.yaml:3:33: placeholder: only printable ASCII without spaces, quotes or backslashes" },
	{ V "credentials:\n  x: {from: env:A, placeholder: \"abcdefgh\xc3\xa9ijklmnopq\"}\n", 0,
	  "policy.yaml:3:33: placeholder: only printable ASCII without spaces, quotes or backslashes" },
	{ V "credentials:\n  a: {from: env:A, placeholder: tok_0123456789abcdef}\n"
	    "  b: {from: env:B, placeholder: tok_0123456789abcdef}\n",
	  0, "policy.yaml:4:33: credentials \"a\" and \"b\" have the same placeholder" },
	{ V "credentials:\n  a: {from: env:A, placeholder: tok_0123456789abcdef}\n"
	    "  b: {from: env:B, placeholder: tok_0123456789abcdef_x}\n",
	  0, "policy.yaml:4:33: the placeholder of credential \"a\" is part of the placeholder of credential \"b\"" },
	{ V "credentials:\n  a: {from: env:A, placeholder: xtok_0123456789abcdef}\n"
	    "  b: {from: env:B, placeholder: tok_0123456789abcdef}\n",
	  0, "policy.yaml:4:33: the placeholder of credential \"b\" is part of the placeholder of credential \"a\"" },
	{ V "credentials:\n  a: {from: env:A, env: TOKEN}\n  b: {from: env:B, env: TOKEN}\n", 0,
	  "policy.yaml:4:3: credentials \"a\" and \"b\" both set env: TOKEN" },
	{ V "credentials:\n  a: {from: env:A}\n  a: {from: env:B}\n", 0,
	  "policy.yaml:4:3: duplicate key \"a\" (first at line 3)" },
	/* ---- routes ---- */
	{ V "routes: {host: a}\n", 0, "policy.yaml:2:9: routes: expected a sequence of routes, found a mapping" },
	{ V "routes: [a.com]\n", 0, "policy.yaml:2:10: routes: each route is a mapping with host:, found a string" },
	{ V "routes:\n  - port: 443\n", 0, "policy.yaml:3:5: route has no host:" },
	{ V "routes:\n  - host: a.com\n    hots: b.com\n", 0, "policy.yaml:4:5: unknown key \"hots\" in route" },
	{ V "routes:\n  - host: a.com\n    host: b.com\n", 0,
	  "policy.yaml:4:5: duplicate key \"host\" (first at line 3)" },
	{ V "routes:\n  - host:\n", 0, "policy.yaml:3:10: host: expected a string, found nothing" },
	{ V "routes:\n  - host: \"*\"\n", 0, "policy.yaml:3:11: host: \"*\" alone would allow every host; name them" },
	{ V "routes:\n  - host: a.*.com\n", 0,
	  "policy.yaml:3:11: host: '*' is allowed only as the whole first label, as in *.example.com" },
	{ V "routes:\n  - host: \"*foo.com\"\n", 0,
	  "policy.yaml:3:11: host: '*' is allowed only as the whole first label, as in *.example.com" },
	{ V "routes:\n  - host: \"*.*.com\"\n", 0,
	  "policy.yaml:3:11: host: '*' is allowed only as the whole first label, as in *.example.com" },
	{ V "routes:\n  - host: a..com\n", 0, "policy.yaml:3:11: host: empty label in \"a..com\"" },
	{ V "routes:\n  - host: .a.com\n", 0, "policy.yaml:3:11: host: empty label in \".a.com\"" },
	{ V "routes:\n  - host: a.com..\n", 0, "policy.yaml:3:11: host: empty label in \"a.com..\"" },
	{ V "routes:\n  - host: \".\"\n", 0, "policy.yaml:3:11: host: empty label in \".\"" },
	{ V "routes:\n  - host: \"*.\"\n", 0, "policy.yaml:3:11: host: \"*\" alone would allow every host; name them" },
	{ V "routes:\n  - host: a_b.com\n", 0,
	  "policy.yaml:3:11: host: invalid character '_' in \"a_b.com\" (allowed: a-z 0-9 . -)" },
	{ V "routes:\n  - host: \"b\\u00e9b\\u00e9.com\"\n", 0,
	  "policy.yaml:3:11: host: invalid character '?' in \"b??b??.com\" (allowed: a-z 0-9 . -)" },
	{ V "routes:\n  - host: a234567890123456789012345678901234567890123456789012345678901234.com\n", 0,
	  "policy.yaml:3:11: host: label longer than 63 characters in "
	  "\"a234567890123456789012345678901234567890123456789012345678901234...\"" },
	{ V "routes:\n  - host: \"::1\"\n", 0,
	  "policy.yaml:3:11: host: write an IPv6 address in brackets, as in [::1]" },
	{ V "routes:\n  - host: \"[::1\"\n", 0, "policy.yaml:3:11: host: invalid IPv6 literal \"[::1\"" },
	{ V "routes:\n  - host: \"[::g]\"\n", 0, "policy.yaml:3:11: host: invalid IPv6 literal \"[::g]\"" },
	{ V "routes:\n  - host: \"[fe80::1%25eth0]\"\n", 0,
	  "policy.yaml:3:11: host: invalid IPv6 literal \"[fe80::1%25eth0]\"" },
	{ V "routes:\n  - host: api.github.com:443\n", 0,
	  "policy.yaml:3:11: host: must not contain a port; use port:" },
	{ V "routes:\n  - host: https://api.github.com\n", 0,
	  "policy.yaml:3:11: host: expected a host name, not a URL" },
	{ V "routes:\n  - host: 1.2.3\n", 0, "policy.yaml:3:11: host: invalid IPv4 address \"1.2.3\"" },
	{ V "routes:\n  - host: 010.0.0.1\n", 0, "policy.yaml:3:11: host: invalid IPv4 address \"010.0.0.1\"" },
	{ V "routes:\n  - host: 2130706433\n", 0, "policy.yaml:3:11: host: invalid IPv4 address \"2130706433\"" },
	{ V "routes:\n  - host: \"*.10.0.0.1\"\n", 0,
	  "policy.yaml:3:11: host: a wildcard needs a domain name, not an address" },
	{ V "routes:\n  - {host: a.com, port: 0}\n", 0, "policy.yaml:3:25: port: expected an integer from 1 to 65535" },
	{ V "routes:\n  - {host: a.com, port: 65536}\n", 0,
	  "policy.yaml:3:25: port: expected an integer from 1 to 65535" },
	{ V "routes:\n  - {host: a.com, port: 443x}\n", 0,
	  "policy.yaml:3:25: port: expected an integer from 1 to 65535" },
	{ V "routes:\n  - {host: a.com, scheme: ftp}\n", 0, "policy.yaml:3:27: scheme: expected https or http" },
	{ V "routes:\n  - {host: a.com, methods: GET}\n", 0,
	  "policy.yaml:3:28: methods: expected a sequence such as [GET, POST], found a string" },
	{ V "routes:\n  - {host: a.com, methods: []}\n", 0,
	  "policy.yaml:3:28: methods: is empty; leave it out to allow every method" },
	{ V "routes:\n  - {host: a.com, methods: [GET, CONNECT]}\n", 0,
	  "policy.yaml:3:34: methods: CONNECT is not allowed (the proxy answers CONNECT itself, by host and port)" },
	{ V "routes:\n  - {host: a.com, methods: [trace]}\n", 0,
	  "policy.yaml:3:29: methods: TRACE is not allowed (it echoes the request, injected credentials included)" },
	{ V "routes:\n  - {host: a.com, methods: [\"GE T\"]}\n", 0,
	  "policy.yaml:3:29: methods: \"GE T\" is not an HTTP method" },
	{ V "routes:\n  - {host: a.com, methods: [GET, get]}\n", 0, "policy.yaml:3:34: methods: GET is listed twice" },
	{ V "routes:\n  - {host: a.com, methods: [[GET]]}\n", 0,
	  "policy.yaml:3:29: methods: expected a string, found a sequence" },
	{ V "routes:\n  - {host: a.com, paths: \"/a\"}\n", 0,
	  "policy.yaml:3:26: paths: expected a sequence such as [\"/repos/**\"], found a string" },
	{ V "routes:\n  - {host: a.com, paths: []}\n", 0,
	  "policy.yaml:3:26: paths: is empty; leave it out to allow every path" },
	{ V "routes:\n  - {host: a.com, paths: [\"repos/**\"]}\n", 0,
	  "policy.yaml:3:27: paths: glob \"repos/**\" must start with '/'" },
	{ V "routes:\n  - {host: a.com, paths: [\"/a/../b\"]}\n", 0,
	  "policy.yaml:3:27: paths: glob \"/a/../b\" contains a \".\" or \"..\" segment, which a normalised path never "
	  "contains" },
	{ V "routes:\n  - {host: a.com, paths: [\"/a/%2e%2E/b\"]}\n", 0,
	  "policy.yaml:3:27: paths: glob \"/a/%2e%2E/b\" contains a \".\" or \"..\" segment, which a normalised path "
	  "never contains" },
	{ V "routes:\n  - {host: a.com, paths: [\"/a/.\"]}\n", 0,
	  "policy.yaml:3:27: paths: glob \"/a/.\" contains a \".\" or \"..\" segment, which a normalised path never "
	  "contains" },
	{ V "routes:\n  - {host: a.com, paths: [\"/a//b\"]}\n", 0,
	  "policy.yaml:3:27: paths: glob \"/a//b\" contains \"//\", which a normalised path never contains" },
	{ V "routes:\n  - {host: a.com, paths: [\"/a?x=1\"]}\n", 0,
	  "policy.yaml:3:27: paths: glob \"/a?x=1\" contains '?'; globs match the path only, never a query or "
	  "fragment" },
	{ V "routes:\n  - {host: a.com, paths: [\"/a#x\"]}\n", 0,
	  "policy.yaml:3:27: paths: glob \"/a#x\" contains '#'; globs match the path only, never a query or fragment" },
	{ V "routes:\n  - {host: a.com, paths: [\"/a%zz\"]}\n", 0,
	  "policy.yaml:3:27: paths: glob \"/a%zz\" has a malformed %-escape" },
	{ V "routes:\n  - {host: a.com, paths: [\"/a%4\"]}\n", 0,
	  "policy.yaml:3:27: paths: glob \"/a%4\" has a malformed %-escape" },
	{ V "routes:\n  - {host: a.com, paths: [\"/a b\"]}\n", 0,
	  "policy.yaml:3:27: paths: glob \"/a b\" contains a space, control or non-ASCII character; write it "
	  "percent-encoded" },
	{ V "routes:\n  - {host: a.com, max_body: 1TB}\n", 0,
	  "policy.yaml:3:29: max_body: expected a size from 0 to 18446744073709551615 bytes, such as 65536, 512KiB or "
	  "10MB" },
	{ V "routes:\n  - {host: a.com, allow_private: yes}\n", 0,
	  "policy.yaml:3:34: allow_private: expected true or false" },
	{ V "routes:\n  - {host: 127.0.0.1, allow_private: false}\n", 0,
	  "policy.yaml:3:38: allow_private: false contradicts host \"127.0.0.1\", which names a loopback or private "
	  "address" },
	{ V "routes:\n  - {host: a.com, upstream_ca: \"\"}\n", 0, "policy.yaml:3:32: upstream_ca: is empty" },
	/* ---- credential and inject on a route ---- */
	{ ROUTE "    credential: c\n", 0, "policy.yaml:7:17: unknown credential \"c\" (defined: a, b)" },
	{ V "routes:\n  - host: a.com\n    credential: c\n    inject: bearer\n", 0,
	  "policy.yaml:4:17: unknown credential \"c\" (no credentials are defined)" },
	{ ROUTE "    credential: a\n", 0, "policy.yaml:7:5: route has credential but no inject: mode" },
	{ ROUTE "    inject: bearer\n", 0, "policy.yaml:7:5: route has inject: but no credential:" },
	{ ROUTE "    credential: a\n    inject: bearr\n", 0,
	  "policy.yaml:8:13: unknown inject mode \"bearr\" " EXPECTED },
	{ ROUTE "    credential: a\n    inject: Bearer\n", 0,
	  "policy.yaml:8:13: unknown inject mode \"Bearer\" " EXPECTED },
	{ ROUTE "    credential: a\n    inject:\n", 0, "policy.yaml:8:12: inject: found nothing " EXPECTED },
	{ ROUTE "    credential: a\n    inject: [bearer]\n", 0,
	  "policy.yaml:8:13: inject: found a sequence " EXPECTED },
	{ ROUTE "    credential: a\n    inject: {}\n", 0, "policy.yaml:8:13: inject: empty mapping " EXPECTED },
	{ ROUTE "    credential: a\n    inject: {bearer: x}\n", 0,
	  "policy.yaml:8:14: unknown inject mode \"bearer\" " EXPECTED },
	{ ROUTE "    credential: a\n    inject: {basic: x, query: y}\n", 0,
	  "policy.yaml:8:24: inject: basic and query cannot be combined; choose one" },
	{ ROUTE "    credential: a\n    inject: {value: \"{secret}\"}\n", 0,
	  "policy.yaml:8:14: inject: value: needs header:" },
	{ ROUTE "    credential: a\n    inject: {query: key, value: \"{secret}\"}\n", 0,
	  "policy.yaml:8:26: inject: value: goes only with header:" },
	{ ROUTE "    credential: a\n    inject: {basic: \"a:b\"}\n", 0,
	  "policy.yaml:8:21: inject: basic: a user name cannot contain ':'" },
	{ ROUTE "    credential: a\n    inject: {basic: \"\"}\n", 0, "policy.yaml:8:21: inject: basic: is empty" },
	{ ROUTE "    credential: a\n    inject: {header: Host}\n", 0,
	  "policy.yaml:8:22: inject: header: Host cannot be injected (it frames or routes the request)" },
	{ ROUTE "    credential: a\n    inject: {header: transfer-encoding}\n", 0,
	  "policy.yaml:8:22: inject: header: transfer-encoding cannot be injected (it frames or routes the request)" },
	{ ROUTE "    credential: a\n    inject: {header: \"X Key\"}\n", 0,
	  "policy.yaml:8:22: inject: header: \"X Key\" is not a valid header name" },
	{ ROUTE "    credential: a\n    inject: {header: X-Key, value: token}\n", 0,
	  "policy.yaml:8:36: inject: value: must contain {secret}" },
	{ ROUTE "    credential: a\n    inject: {header: X-Key, value: \"{secret}\\r\\nHost: evil\"}\n", 0,
	  "policy.yaml:8:36: inject: value: only printable ASCII, spaces and tabs (RFC 9110 5.5)" },
	{ ROUTE "    credential: a\n    inject: {query: \"a&b\"}\n", 0,
	  "policy.yaml:8:21: inject: query: parameter name must be letters, digits and - . _ ~" },
	/* ---- rate and time limits, compressed: ---- */
	{ ROUTE "    rate: 60\n", 0,
	  "policy.yaml:7:11: rate: expected COUNT/UNIT with a count from 1 to 1000000000 and unit second, minute or "
	  "hour, such as 60/minute" },
	{ ROUTE "    rate: 0/minute\n", 0,
	  "policy.yaml:7:11: rate: expected COUNT/UNIT with a count from 1 to 1000000000 and unit second, minute or "
	  "hour, such as 60/minute" },
	{ ROUTE "    rate: 5/day\n", 0,
	  "policy.yaml:7:11: rate: expected COUNT/UNIT with a count from 1 to 1000000000 and unit second, minute or "
	  "hour, such as 60/minute" },
	{ ROUTE "    rate: -5/second\n", 0,
	  "policy.yaml:7:11: rate: expected COUNT/UNIT with a count from 1 to 1000000000 and unit second, minute or "
	  "hour, such as 60/minute" },
	{ ROUTE "    rate: 5/minutes\n", 0,
	  "policy.yaml:7:11: rate: expected COUNT/UNIT with a count from 1 to 1000000000 and unit second, minute or "
	  "hour, such as 60/minute" },
	{ ROUTE "    burst: 3\n", 0, "policy.yaml:7:12: burst: needs rate: (burst is the size of the rate's bucket)" },
	{ ROUTE "    rate: 1/second\n    burst: 0\n", 0,
	  "policy.yaml:8:12: burst: expected an integer from 1 to 1000000000" },
	{ ROUTE "    hours: \"Mon-Fri 08:00-18:00\"\n", 0,
	  "policy.yaml:7:12: hours: expected a list of windows such as [\"Mon-Fri 08:00-18:00\"], found a string" },
	{ ROUTE "    hours: [\"Mon-Fry 08:00-18:00\"]\n", 0,
	  "policy.yaml:7:13: hours: expected \"[DAYS ]HH:MM-HH:MM\" such as \"Mon-Fri 08:00-18:00\" or \"00:00-24:00\" "
	  "(days Mon Tue Wed Thu Fri Sat Sun, ranges with -, lists with ,)" },
	{ ROUTE "    hours: [\"Mon, 08:00-18:00\"]\n", 0,
	  "policy.yaml:7:13: hours: expected \"[DAYS ]HH:MM-HH:MM\" such as \"Mon-Fri 08:00-18:00\" or \"00:00-24:00\" "
	  "(days Mon Tue Wed Thu Fri Sat Sun, ranges with -, lists with ,)" },
	{ ROUTE "    hours: [\"Mon,Tue, 08:00-18:00\"]\n", 0,
	  "policy.yaml:7:13: hours: expected \"[DAYS ]HH:MM-HH:MM\" such as \"Mon-Fri 08:00-18:00\" or \"00:00-24:00\" "
	  "(days Mon Tue Wed Thu Fri Sat Sun, ranges with -, lists with ,)" },
	{ ROUTE "    hours: [\"25:00-26:00\"]\n", 0,
	  "policy.yaml:7:13: hours: expected \"[DAYS ]HH:MM-HH:MM\" such as \"Mon-Fri 08:00-18:00\" or \"00:00-24:00\" "
	  "(days Mon Tue Wed Thu Fri Sat Sun, ranges with -, lists with ,)" },
	{ ROUTE "    hours: [\"08:00-18:60\"]\n", 0,
	  "policy.yaml:7:13: hours: expected \"[DAYS ]HH:MM-HH:MM\" such as \"Mon-Fri 08:00-18:00\" or \"00:00-24:00\" "
	  "(days Mon Tue Wed Thu Fri Sat Sun, ranges with -, lists with ,)" },
	{ ROUTE "    hours: [\"8:00-18:00\"]\n", 0,
	  "policy.yaml:7:13: hours: expected \"[DAYS ]HH:MM-HH:MM\" such as \"Mon-Fri 08:00-18:00\" or \"00:00-24:00\" "
	  "(days Mon Tue Wed Thu Fri Sat Sun, ranges with -, lists with ,)" },
	{ ROUTE "    hours: [\"18:00-08:00\"]\n", 0,
	  "policy.yaml:7:13: hours: a window must end after it starts (18:00-08:00); split a window across midnight in "
	  "two, such as \"Fri 22:00-24:00\" and \"Sat 00:00-06:00\"" },
	{ ROUTE "    timezone: UTC\n", 0, "policy.yaml:7:15: timezone: applies to hours:, which are not given here" },
	{ ROUTE "    hours: []\n    timezone: Europe/Paris\n", 0,
	  "policy.yaml:8:15: timezone: expected UTC or a fixed offset from -14:00 to +14:00 such as +02:00 (names like "
	  "Europe/Paris are not read: keyward's windows do not follow daylight saving time)" },
	{ ROUTE "    hours: []\n    timezone: \"+15:00\"\n", 0,
	  "policy.yaml:8:15: timezone: expected UTC or a fixed offset from -14:00 to +14:00 such as +02:00 (names like "
	  "Europe/Paris are not read: keyward's windows do not follow daylight saving time)" },
	{ V "credentials:\n  a: {from: env:A, rate: fast}\n", 0,
	  "policy.yaml:3:26: rate: expected COUNT/UNIT with a count from 1 to 1000000000 and unit second, minute or "
	  "hour, such as 60/minute" },
	{ ROUTE "    compressed: refuse\n", 0,
	  "policy.yaml:7:17: compressed: applies to routes with a credential (their responses are scanned)" },
	{ ROUTE "    credential: a\n    inject: bearer\n    compressed: gzip\n", 0,
	  "policy.yaml:9:17: compressed: expected decode or refuse" },
	{ V "limits: {max_decoded_body: 0}\n", 0,
	  "policy.yaml:2:28: max_decoded_body: expected a size from 1 to 18446744073709551615 bytes, such as 65536, "
	  "512KiB or 10MB" },
};

static void test_bad_policies(void **state)
{
	size_t failures = 0;

	(void)state;
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		const struct bad_case *c = &bad[i];
		size_t len = c->len ? c->len : strlen(c->yaml);
		struct policy *p = NULL;
		struct policy_error err = { .message = "untouched" };

		int r = policy_load_string("policy.yaml", c->yaml, len, &p, &err);
		if (r != -EINVAL || p) {
			print_error("case %zu: loaded (r=%d), want: %s\n", i, r, c->error);
			policy_free(p);
			failures++;
		} else if (strcmp(err.message, c->error) != 0) {
			print_error("case %zu:\n got: %s\nwant: %s\n", i, err.message, c->error);
			failures++;
		}
	}
	/* all mismatches are printed above, then the test fails once */
	assert_int_equal(failures, 0);
}

/* Inputs built in code: too big, too deep, too many. */
static void expect_error(const char *yaml, size_t len, const char *want)
{
	struct policy *p = NULL;
	struct policy_error err;
	assert_int_equal(policy_load_string("policy.yaml", yaml, len, &p, &err), -EINVAL);
	assert_null(p);
	assert_string_equal(err.message, want);
}

static void test_oversized(void **state)
{
	(void)state;
	size_t n = 1024 * 1024 + 1;
	char *big = malloc(n);
	assert_non_null(big);
	memset(big, '#', n);
	memcpy(big, V, strlen(V));
	expect_error(big, n, "policy.yaml: policy is larger than 1 MiB");
	/* exactly 1 MiB of comment is fine */
	struct policy *p = NULL;
	struct policy_error err;
	assert_int_equal(policy_load_string("policy.yaml", big, n - 1, &p, &err), 0);
	policy_free(p);
	free(big);
}

static void test_deep(void **state)
{
	(void)state;
	/* 100000 nested flow sequences: refused at depth 32, not recursed */
	size_t depth = 100000;
	size_t n = strlen(V "sandbox: {env: ") + 2 * depth + 2;
	char *s = malloc(n + 1);
	assert_non_null(s);
	size_t o = 0;
	memcpy(s, V "sandbox: {env: ", strlen(V "sandbox: {env: "));
	o = strlen(V "sandbox: {env: ");
	memset(s + o, '[', depth);
	o += depth;
	memset(s + o, ']', depth);
	o += depth;
	s[o++] = '}';
	s[o++] = '\n';
	s[o] = '\0';
	/* the root mapping and sandbox's are 2 levels; the first '[' (column
	 * 16) is the 3rd, so the 31st '[' is the 33rd level, at column 46 */
	expect_error(s, o, "policy.yaml:2:46: policy nests deeper than 32 levels");
	free(s);
}

static void test_too_many(void **state)
{
	(void)state;
	/* 100001 nodes in one flow sequence */
	size_t items = 100001;
	size_t n = strlen(V "sandbox: {env: [") + 2 * items + 3;
	char *s = malloc(n + 1);
	assert_non_null(s);
	size_t o = strlen(V "sandbox: {env: [");
	memcpy(s, V "sandbox: {env: [", o);
	for (size_t i = 0; i < items; i++) {
		s[o++] = '1';
		s[o++] = ',';
	}
	s[o - 1] = ']';
	s[o++] = '}';
	s[o] = '\0';
	struct policy *p = NULL;
	struct policy_error err;
	assert_int_equal(policy_load_string("policy.yaml", s, o, &p, &err), -EINVAL);
	assert_non_null(strstr(err.message, "policy has more than 100000 YAML nodes"));
	free(s);

	/* 5000 routes: over the ceiling of 4096 */
	struct buf_like {
		char *d;
		size_t n;
	} b = { malloc(5000 * 20 + 64), 0 };
	assert_non_null(b.d);
	b.n = (size_t)snprintf(b.d, 64, V "routes:\n");
	for (int i = 0; i < 5000; i++)
		b.n += (size_t)snprintf(b.d + b.n, 20, "- host: h%d.com\n", i);
	expect_error(b.d, b.n, "policy.yaml:3:1: routes: more than 4096 routes");
	free(b.d);
}

/* ---- valid policies ---- */

static void test_example_file(void **state)
{
	(void)state;
	struct policy *p = NULL;
	struct policy_error err = { .message = "untouched" };

	assert_int_equal(policy_load("data/policy/example.yaml", &p, &err), 0);
	assert_non_null(p);
	assert_string_equal(err.message, "untouched");
	assert_string_equal(p->path, "data/policy/example.yaml");

	assert_int_equal(p->n_creds, 2);
	const struct policy_credential *gh = policy_credential_find(p, "github");
	assert_non_null(gh);
	assert_int_equal(gh->source, SOURCE_ENV);
	assert_string_equal(gh->source_arg, "KEYWARD_TEST_GITHUB_TOKEN");
	assert_string_equal(gh->env, "GITHUB_TOKEN");
	assert_string_equal(gh->placeholder, "ghp_kwPLACEHOLDERgithub0000000000000000");
	assert_int_equal(gh->line, 5);
	assert_int_equal(gh->column, 3);
	const struct policy_credential *npm = policy_credential_find(p, "npm");
	assert_non_null(npm);
	assert_int_equal(npm->source, SOURCE_FILE);
	assert_string_equal(npm->source_arg, "/run/secrets/npm");
	assert_string_equal(npm->placeholder, "kw_npm_b27b206f3022bbc5d6402478");
	assert_null(policy_credential_find(p, "nope"));
	assert_null(policy_credential_find(p, "GITHUB"));

	assert_int_equal(p->n_routes, 4);
	const struct policy_route *r = &p->routes[0];
	assert_int_equal(r->index, 0);
	assert_int_equal(r->line, 13);
	assert_int_equal(r->column, 5);
	assert_string_equal(r->host, "api.github.com");
	assert_false(r->wildcard);
	assert_int_equal(r->port, 0);
	assert_int_equal(r->scheme, SCHEME_HTTPS);
	assert_string_equal(r->methods[0], "GET");
	assert_string_equal(r->methods[1], "POST");
	assert_null(r->methods[2]);
	assert_string_equal(r->paths[0], "/repos/acme/app/**");
	assert_null(r->paths[1]);
	assert_ptr_equal(r->credential, gh);
	assert_int_equal(r->inject, INJECT_BEARER);
	assert_false(r->allow_private);

	r = &p->routes[1];
	assert_null(r->methods);
	assert_int_equal(r->inject, INJECT_BASIC);
	assert_string_equal(r->inject_user, "x-access-token");

	r = &p->routes[2];
	assert_ptr_equal(r->credential, npm);
	assert_int_equal(r->inject, INJECT_HEADER);
	assert_string_equal(r->inject_header, "Authorization");
	assert_string_equal(r->inject_value, "Bearer {secret}");

	r = &p->routes[3];
	assert_string_equal(r->host, "pypi.org");
	assert_null(r->credential);
	assert_int_equal(r->inject, INJECT_NONE);
	assert_null(r->paths);

	/* Relative paths are taken from the policy file's directory. */
	assert_string_equal(p->audit, "data/policy/keyward-audit.jsonl");
	assert_null(p->upstream_ca);
	assert_int_equal(p->limits.max_header_bytes, 65536);
	assert_int_equal(p->limits.max_headers, 100);
	assert_int_equal(p->limits.header_timeout_ms, 10000);
	assert_int_equal(p->limits.idle_timeout_ms, 60000);
	assert_int_equal(p->limits.upstream_timeout_ms, 300000);
	assert_int_equal(p->limits.max_body, 0);

	/* and it matches as DESIGN.md says */
	struct match_result m;
	struct match_request req = { SCHEME_HTTPS, "api.github.com", 443, "DELETE", "/repos/acme/app/issues/1" };
	policy_match(p, &req, &m);
	assert_int_equal(m.fail, MATCH_METHOD);
	assert_ptr_equal(m.route, &p->routes[0]);
	req.method = "POST";
	policy_match(p, &req, &m);
	assert_int_equal(m.fail, MATCH_OK);

	policy_free(p);
}

static void test_file_errors(void **state)
{
	(void)state;
	struct policy *p = NULL;
	struct policy_error err;

	assert_int_equal(policy_load("data/policy/missing.yaml", &p, &err), -ENOENT);
	assert_string_equal(err.message, "data/policy/missing.yaml: cannot open: No such file or directory");
	assert_int_equal(policy_load("data/policy", &p, &err), -EINVAL);
	assert_string_equal(err.message, "data/policy: not a regular file");
	assert_int_equal(policy_load("data/policy/bad-inject.yaml", &p, &err), -EINVAL);
	assert_string_equal(err.message, "data/policy/bad-inject.yaml:7:13: unknown inject mode "
	                                 "\"bearr\" " EXPECTED);
	assert_null(p);
	/* a FIFO would block a plain open(); it is refused instead */
	char dir[] = "/tmp/kw-policy-XXXXXX", fifo[64];
	assert_non_null(mkdtemp(dir));
	snprintf(fifo, sizeof(fifo), "%s/fifo", dir);
	assert_int_equal(mkfifo(fifo, 0600), 0);
	assert_int_equal(policy_load(fifo, &p, &err), -EINVAL);
	assert_non_null(strstr(err.message, "/fifo: not a regular file"));
	unlink(fifo);
	rmdir(dir);
	/* a NULL error is allowed */
	assert_int_equal(policy_load("data/policy/bad-inject.yaml", &p, NULL), -EINVAL);
	policy_free(NULL);
}

static struct policy *load_ok(const char *yaml)
{
	struct policy *p = NULL;
	struct policy_error err = { .message = "" };
	int r = policy_load_string("t.yaml", yaml, strlen(yaml), &p, &err);
	if (r < 0)
		fail_msg("policy failed to load: %s", err.message);
	return p;
}

static void test_limits(void **state)
{
	(void)state;
	struct policy *p =
	    load_ok(V "limits:\n  max_header_bytes: 16KiB\n  max_headers: 1000\n"
	              "  header_timeout: 500ms\n  idle_timeout: 2m\n  upstream_timeout: 3s\n  max_body: 10MB\n");
	assert_int_equal(p->limits.max_header_bytes, 16384);
	assert_int_equal(p->limits.max_headers, 1000);
	assert_int_equal(p->limits.header_timeout_ms, 500);
	assert_int_equal(p->limits.idle_timeout_ms, 120000);
	assert_int_equal(p->limits.upstream_timeout_ms, 3000);
	assert_int_equal(p->limits.max_body, 10000000);
	policy_free(p);

	p = load_ok(V "limits: {max_header_bytes: 1048576, header_timeout: 1h, idle_timeout: 24h, "
	              "max_body: 512kib}\n");
	assert_int_equal(p->limits.max_header_bytes, 1048576);
	assert_int_equal(p->limits.header_timeout_ms, 3600000);
	assert_int_equal(p->limits.idle_timeout_ms, 86400000);
	assert_int_equal(p->limits.max_body, 524288);
	policy_free(p);

	p = load_ok(V "limits: {max_body: 0, max_header_bytes: 1024B}\n");
	assert_int_equal(p->limits.max_body, 0);
	assert_int_equal(p->limits.max_header_bytes, 1024);
	policy_free(p);
}

struct host_case {
	const char *host;
	const char *stored;
	bool wildcard;
	bool allow_private;
};

static const struct host_case hosts[] = {
	{ "API.GitHub.COM.", "api.github.com", false, false },
	{ "\"*.Example.com\"", ".example.com", true, false },
	{ "\"*.example.com.\"", ".example.com", true, false },
	{ "\"[::1]\"", "::1", false, true },
	{ "\"[0:0::1]\"", "::1", false, true },
	{ "\"[2001:DB8::1]\"", "2001:db8::1", false, true },
	{ "\"[2606:4700::1111]\"", "2606:4700::1111", false, false },
	{ "\"[fec0::1]\"", "fec0::1", false, true },
	{ "\"[64:ff9b::a00:1]\"", "64:ff9b::a00:1", false, true },
	{ "\"[64:ff9b::808:808]\"", "64:ff9b::808:808", false, false },
	{ "\"[64:ff9b:1::808:808]\"", "64:ff9b:1::808:808", false, true },
	{ "\"[2002:c0a8:101::1]\"", "2002:c0a8:101::1", false, true },
	{ "\"[::ffff:8.8.8.8]\"", "::ffff:8.8.8.8", false, false },
	{ "\"[fd00::5]\"", "fd00::5", false, true },
	{ "\"[fe80::1]\"", "fe80::1", false, true },
	{ "\"[::ffff:192.168.1.1]\"", "::ffff:192.168.1.1", false, true },
	{ "127.0.0.1", "127.0.0.1", false, true },
	{ "10.1.2.3", "10.1.2.3", false, true },
	{ "172.16.0.1", "172.16.0.1", false, true },
	{ "172.32.0.1", "172.32.0.1", false, false },
	{ "192.168.0.1", "192.168.0.1", false, true },
	{ "169.254.169.254", "169.254.169.254", false, true },
	{ "100.64.0.1", "100.64.0.1", false, true },
	{ "0.0.0.0", "0.0.0.0", false, true },
	{ "8.8.8.8", "8.8.8.8", false, false },
	{ "192.0.2.10", "192.0.2.10", false, true },
	{ "198.18.0.1", "198.18.0.1", false, true },
	{ "198.20.0.1", "198.20.0.1", false, false },
	{ "224.0.0.1", "224.0.0.1", false, true },
	{ "255.255.255.255", "255.255.255.255", false, true },
	{ "1.1.1.1", "1.1.1.1", false, false },
	{ "localhost", "localhost", false, true },
	{ "LocalHost.", "localhost", false, true },
	{ "app.localhost", "app.localhost", false, true },
	{ "\"*.localhost\"", ".localhost", true, true },
	{ "notlocalhost", "notlocalhost", false, false },
	{ "xn--bcher-kva.example", "xn--bcher-kva.example", false, false },
	{ "a-1.b-2.c", "a-1.b-2.c", false, false },
	{ "com", "com", false, false },
	{ "1.2.3.4.example", "1.2.3.4.example", false, false },
};

static void test_hosts(void **state)
{
	(void)state;
	for (size_t i = 0; i < ARRAY_SIZE(hosts); i++) {
		char yaml[256];
		snprintf(yaml, sizeof(yaml), V "routes:\n  - host: %s\n", hosts[i].host);
		struct policy *p = load_ok(yaml);
		const struct policy_route *r = &p->routes[0];
		if (!streq(r->host, hosts[i].stored) || r->wildcard != hosts[i].wildcard ||
		    r->allow_private != hosts[i].allow_private)
			fail_msg("case %zu %s: got %s wildcard=%d private=%d", i, hosts[i].host, r->host, r->wildcard,
			         r->allow_private);
		policy_free(p);
	}
}

static void test_route_fields(void **state)
{
	(void)state;
	struct policy *p = load_ok(V "credentials:\n"
	                             "  k: {from: env:K, placeholder: \"sk-test_0123456789abcdef\"}\n"
	                             "upstream_ca: /etc/ca.pem\n"
	                             "routes:\n"
	                             "  - host: internal.test\n"
	                             "    port: 8443\n"
	                             "    scheme: http\n"
	                             "    methods: [get, Patch, M-SEARCH]\n"
	                             "    paths: [\"/a/%7euser/%2f/*\", \"/b/**\"]\n"
	                             "    credential: k\n"
	                             "    inject: {query: api_key}\n"
	                             "    upstream_ca: ./ca.pem\n"
	                             "    max_body: 1MiB\n"
	                             "    allow_private: true\n"
	                             "  - {host: a.test, credential: k, inject: swap}\n"
	                             "  - {host: b.test, credential: k, inject: basic}\n"
	                             "  - {host: c.test, credential: k, inject: {header: X-Api-Key}}\n"
	                             "  - {host: 10.0.0.1, allow_private: true}\n");
	assert_string_equal(p->upstream_ca, "/etc/ca.pem");
	assert_string_equal(p->creds[0].placeholder, "sk-test_0123456789abcdef");
	assert_null(p->creds[0].env);

	const struct policy_route *r = &p->routes[0];
	assert_int_equal(r->port, 8443);
	assert_int_equal(r->scheme, SCHEME_HTTP);
	assert_string_equal(r->methods[0], "GET");
	assert_string_equal(r->methods[1], "PATCH");
	assert_string_equal(r->methods[2], "M-SEARCH");
	assert_string_equal(r->paths[0], "/a/~user/%2F/*");
	assert_string_equal(r->paths[1], "/b/**");
	assert_int_equal(r->inject, INJECT_QUERY);
	assert_string_equal(r->inject_query, "api_key");
	assert_string_equal(r->upstream_ca, "./ca.pem");
	assert_int_equal(r->max_body, 1048576);
	assert_true(r->allow_private);

	assert_int_equal(p->routes[1].inject, INJECT_SWAP);
	assert_int_equal(p->routes[2].inject, INJECT_BASIC);
	assert_null(p->routes[2].inject_user);
	assert_int_equal(p->routes[3].inject, INJECT_HEADER);
	assert_string_equal(p->routes[3].inject_header, "X-Api-Key");
	assert_string_equal(p->routes[3].inject_value, "{secret}");
	assert_true(p->routes[4].allow_private);
	assert_int_equal(p->routes[4].index, 4);
	policy_free(p);

	/* an aws credential's routes re-sign, with or without inject: sigv4 */
	p = load_ok(V AWS_CRED "routes:\n  - {host: s3.example.com, credential: s3}\n"
	                       "  - {host: sts.example.com, credential: s3, inject: sigv4}\n");
	assert_int_equal(p->routes[0].inject, INJECT_SIGV4);
	assert_int_equal(p->routes[1].inject, INJECT_SIGV4);
	assert_int_equal(p->creds[0].kind, CRED_AWS);
	assert_non_null(p->creds[0].parts[AWS_SECRET_ACCESS_KEY]);
	assert_null(p->creds[0].parts[AWS_SESSION_TOKEN]);
	policy_free(p);

	/* optional sections may be empty collections */
	p = load_ok(V "credentials: {}\nroutes: []\nsandbox: {}\nlimits: {}\n");
	assert_int_equal(p->n_creds, 0);
	assert_int_equal(p->n_routes, 0);
	assert_null(p->sandbox.workspace);
	assert_int_equal(p->sandbox.n_paths, 0);
	policy_free(p);
}

/* ---- rate and time limits ---- */

#define MON_2026_11_23 1795392000 /* 00:00 UTC, a Monday */

static void test_quota(void **state)
{
	(void)state;
	struct policy *p =
	    load_ok(V "credentials:\n"
	              "  k: {from: env:K, rate: 100/hour, hours: [\"00:00-24:00\"]}\n"
	              "  m: {from: env:M}\n"
	              "routes:\n"
	              "  - host: a.test\n"
	              "    credential: k\n"
	              "    inject: bearer\n"
	              "    compressed: refuse\n"
	              "    rate: 60/minute\n"
	              "    burst: 10\n"
	              "    hours: [\"Mon-Fri 08:00-18:00\", \"sat,Sun 10:00-12:30\", \"Fri-Mon 23:00-24:00\"]\n"
	              "    timezone: \"-05:30\"\n"
	              "  - {host: b.test, rate: 5/second}\n"
	              "  - {host: c.test, hours: []}\n"
	              "  - {host: d.test, credential: m, inject: bearer}\n");
	const struct policy_quota *q = &p->routes[0].quota;
	assert_true(p->routes[0].refuse_compressed);
	assert_int_equal(q->rate_count, 60);
	assert_int_equal(q->rate_period_s, 60);
	assert_int_equal(q->burst, 10);
	assert_int_equal(q->n_windows, 3);
	assert_int_equal(q->windows[0].days, 0x1f);
	assert_int_equal(q->windows[0].start, 8 * 60);
	assert_int_equal(q->windows[0].end, 18 * 60);
	assert_int_equal(q->windows[1].days, 0x60);
	assert_int_equal(q->windows[1].end, 12 * 60 + 30);
	assert_int_equal(q->windows[2].days, 0x71); /* Fri, Sat, Sun, Mon */
	assert_int_equal(q->tz_offset_min, -330);
	assert_int_equal(p->routes[1].quota.rate_period_s, 1);
	assert_int_equal(p->routes[1].quota.burst, 5); /* the count by default */
	assert_false(p->routes[1].quota.has_hours);
	assert_true(p->routes[2].quota.has_hours);
	assert_int_equal(p->routes[2].quota.n_windows, 0);
	assert_false(p->routes[3].refuse_compressed);
	assert_int_equal(p->creds[0].quota.rate_count, 100);
	assert_int_equal(p->creds[0].quota.rate_period_s, 3600);
	assert_true(p->creds[0].quota.has_hours);
	assert_int_equal(p->limits.max_decoded_body, 1024 * 1024 * 1024);

	/* policy_hours_open, UTC-05:30: Monday 00:00 UTC is Sunday 18:30 there */
	uint64_t wait = 0;
	assert_false(policy_hours_open(q, MON_2026_11_23, &wait));
	assert_int_equal(wait, 4 * 3600 + 30 * 60);
	assert_true(policy_hours_open(q, MON_2026_11_23 + 5 * 3600, &wait));            /* Sun 23:30 */
	assert_false(policy_hours_open(q, MON_2026_11_23 + 5 * 3600 + 30 * 60, &wait)); /* Mon 00:00 */
	assert_int_equal(wait, 8 * 3600);                                               /* Mon 08:00 */
	assert_true(policy_hours_open(q, MON_2026_11_23 + 13 * 3600 + 30 * 60, &wait)); /* Mon 08:00 */
	assert_true(policy_hours_open(q, MON_2026_11_23 + 23 * 3600 + 30 * 60 - 1, &wait));
	assert_false(policy_hours_open(q, MON_2026_11_23 + 23 * 3600 + 30 * 60, &wait)); /* Mon 18:00 */
	assert_int_equal(wait, 5 * 3600);                                                /* Mon 23:00 */
	/* Tuesday 23:30 there: Fri-Mon does not cover Tuesday; next is Wed 08:00 */
	assert_false(policy_hours_open(q, MON_2026_11_23 + 24 * 3600 + 29 * 3600, &wait));
	assert_int_equal(wait, 8 * 3600 + 30 * 60);
	/* no hours: always open; an empty list: never, with no wait to tell */
	assert_true(policy_hours_open(&p->routes[1].quota, MON_2026_11_23, &wait));
	wait = 99;
	assert_false(policy_hours_open(&p->routes[2].quota, MON_2026_11_23, &wait));
	assert_int_equal(wait, 0);
	/* before 1970 and far ahead: the day arithmetic holds */
	assert_true(policy_hours_open(&p->creds[0].quota, -1, &wait));
	assert_true(policy_hours_open(&p->creds[0].quota, INT64_C(1) << 40, &wait));
	policy_free(p);
}

/* ---- sandbox: ---- */

static void test_sandbox(void **state)
{
	(void)state;
	struct policy *p =
	    load_ok(V CREDS "sandbox:\n  workspace: .\n  read_only: [/opt/tools, data]\n"
	                    "  read_write: [/var/cache/x]\n  env: [TERM, EDITOR]\n  ports: [8000, 5432]\n"
	                    "  landlock: required\n  limits: {memory: 512MiB, pids: 256, cpu: 150%, "
	                    "processes: 300, open_files: 4096, file_size: 1GiB, tmp_size: 64MiB}\n");
	const struct policy_sandbox *sb = &p->sandbox;
	assert_string_equal(sb->workspace, ".");
	assert_int_equal(sb->n_paths, 3);
	assert_string_equal(sb->paths[0].path, "/opt/tools");
	assert_false(sb->paths[0].write);
	assert_string_equal(sb->paths[1].path, "data");
	assert_string_equal(sb->paths[2].path, "/var/cache/x");
	assert_true(sb->paths[2].write);
	assert_string_equal(sb->env[0], "TERM");
	assert_string_equal(sb->env[1], "EDITOR");
	assert_null(sb->env[2]);
	assert_int_equal(sb->n_ports, 2);
	assert_int_equal(sb->ports[1], 5432);
	assert_true(sb->require_landlock);
	assert_int_equal(sb->memory, 512 * 1024 * 1024);
	assert_int_equal(sb->pids, 256);
	assert_int_equal(sb->cpu_percent, 150);
	assert_int_equal(sb->processes, 300);
	assert_int_equal(sb->open_files, 4096);
	assert_int_equal(sb->file_size, 1024ull * 1024 * 1024);
	assert_int_equal(sb->tmp_size, 64 * 1024 * 1024);
	policy_free(p);

	p = load_ok(V "sandbox: {landlock: auto}\n");
	assert_false(p->sandbox.require_landlock);
	policy_free(p);

	/* a credential's source variable never enters the sandbox */
	expect_error(V CREDS "sandbox: {env: [A]}\n", strlen(V CREDS "sandbox: {env: [A]}\n"),
	             "policy.yaml:5:17: env: A holds the secret of credential \"a\"; it never enters the sandbox");
	expect_error(V "credentials:\n  a: {from: env:A, env: TOK}\nsandbox: {env: [TOK]}\n",
	             strlen(V "credentials:\n  a: {from: env:A, env: TOK}\nsandbox: {env: [TOK]}\n"),
	             "policy.yaml:4:17: env: TOK is already set to the placeholder of credential \"a\"");
	expect_error(V "sandbox: {env: [\"A-B\"]}\n", strlen(V "sandbox: {env: [\"A-B\"]}\n"),
	             "policy.yaml:2:17: env: \"A-B\" is not a variable name");
	expect_error(V "sandbox: {env: {LANG: C}}\n", strlen(V "sandbox: {env: {LANG: C}}\n"),
	             "policy.yaml:2:16: env: expected a sequence of variable names such as [TERM, EDITOR], found a "
	             "mapping");
	expect_error(V "sandbox: {read_only: [/opt/../etc]}\n", strlen(V "sandbox: {read_only: [/opt/../etc]}\n"),
	             "policy.yaml:2:23: read_only: \"/opt/../etc\": a \"..\" component is not allowed");
	expect_error(V "sandbox: {read_write: [/]}\n", strlen(V "sandbox: {read_write: [/]}\n"),
	             "policy.yaml:2:24: read_write: \"/\" would show the whole host to the sandbox");
	expect_error(V "sandbox: {workspace: /}\n", strlen(V "sandbox: {workspace: /}\n"),
	             "policy.yaml:2:22: workspace: \"/\" would give the sandbox the whole host");
	expect_error(V "sandbox: {ports: [0]}\n", strlen(V "sandbox: {ports: [0]}\n"),
	             "policy.yaml:2:19: ports: expected an integer from 1 to 65535");
	expect_error(V "sandbox: {landlock: off}\n", strlen(V "sandbox: {landlock: off}\n"),
	             "policy.yaml:2:21: landlock: expected auto (use it where the kernel has it) or required (refuse "
	             "to run without it)");
	expect_error(V "sandbox: {limits: {cpu: 50}}\n", strlen(V "sandbox: {limits: {cpu: 50}}\n"),
	             "policy.yaml:2:25: cpu: expected a percentage of one core such as 50% or 200%");
	expect_error(V "sandbox: {limits: {memory: 1KiB}}\n", strlen(V "sandbox: {limits: {memory: 1KiB}}\n"),
	             "policy.yaml:2:28: memory: expected a size from 16777216 to 9223372036854775807 bytes, such as "
	             "65536, 512KiB or 10MB");
	expect_error(V "sandbox: {limits: {swap: 1}}\n", strlen(V "sandbox: {limits: {swap: 1}}\n"),
	             "policy.yaml:2:20: unknown key \"swap\" in sandbox limits");
	expect_error(V "sandbox: {paths: [/x]}\n", strlen(V "sandbox: {paths: [/x]}\n"),
	             "policy.yaml:2:11: unknown key \"paths\" in sandbox");
}

/* ---- placeholders ---- */

static void test_placeholder(void **state)
{
	(void)state;
	char out[128];

	/* stable: these values are printed for `keyward proxy` clients and
	 * must never change for a given name */
	assert_int_equal(policy_derive_placeholder("github", out, sizeof(out)), 34);
	assert_string_equal(out, "kw_github_b56c4e160b9553ea607ee766");
	assert_int_equal(policy_derive_placeholder("a", out, sizeof(out)), 29);
	assert_string_equal(out, "kw_a_e7530e8e3e22efafffb4ee08");
	assert_int_equal(policy_derive_placeholder("npm.registry-1", out, sizeof(out)), 42);
	assert_string_equal(out, "kw_npm.registry-1_6e86af733f6fd266417a399f");

	/* exact fit and one short */
	assert_int_equal(policy_derive_placeholder("a", out, 30), 29);
	assert_int_equal(policy_derive_placeholder("a", out, 29), -ENOBUFS);
	assert_int_equal(policy_derive_placeholder("a", out, 0), -ENOBUFS);
	assert_int_equal(policy_derive_placeholder(NULL, out, sizeof(out)), -EINVAL);

	/* unique across many names, and none inside another */
	enum { N = 300 };
	static char ph[N][128];
	for (int i = 0; i < N; i++) {
		char name[16];
		snprintf(name, sizeof(name), "c%d", i);
		assert_true(policy_derive_placeholder(name, ph[i], sizeof(ph[i])) > 0);
	}
	for (int i = 0; i < N; i++)
		for (int j = 0; j < N; j++)
			if (i != j && strstr(ph[i], ph[j]))
				fail_msg("%s contains %s", ph[i], ph[j]);

	/* a loaded credential without placeholder: gets the derived one */
	struct policy *p = load_ok(V "credentials:\n  github: {from: env:X, env: GITHUB_TOKEN}\n");
	assert_string_equal(p->creds[0].placeholder, "kw_github_b56c4e160b9553ea607ee766");
	policy_free(p);
}

/* from: vault:NAME takes the vault's name rule, up to 128 characters
 * (longer than a credential name: vault names are chosen by people). */
static void test_vault_source(void **state)
{
	(void)state;
	char name[129];
	memset(name, 'v', 128);
	name[128] = '\0';
	char yaml[512];
	snprintf(yaml, sizeof(yaml),
	         V "credentials:\n  gh: {from: \"vault:%s\"}\n  np: {from: vault:npm.Registry_1-x}\n", name);
	struct policy *p = load_ok(yaml);
	assert_int_equal(p->creds[0].source, SOURCE_VAULT);
	assert_string_equal(p->creds[0].source_arg, name);
	assert_int_equal(p->creds[1].source, SOURCE_VAULT);
	assert_string_equal(p->creds[1].source_arg, "npm.Registry_1-x");
	assert_string_equal(policy_source_name(p->creds[0].source), "vault");
	assert_string_equal(policy_source_name(SOURCE_ENV), "env");
	assert_string_equal(policy_source_name(SOURCE_FILE), "file");
	policy_free(p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_bad_policies), cmocka_unit_test(test_oversized),
		cmocka_unit_test(test_deep),         cmocka_unit_test(test_too_many),
		cmocka_unit_test(test_file_errors),  cmocka_unit_test(test_example_file),
		cmocka_unit_test(test_limits),       cmocka_unit_test(test_hosts),
		cmocka_unit_test(test_route_fields), cmocka_unit_test(test_placeholder),
		cmocka_unit_test(test_sandbox),      cmocka_unit_test(test_vault_source),
		cmocka_unit_test(test_quota),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
