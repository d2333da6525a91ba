#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "common/log.h"
#include "common/state.h"
#include "policy/policy.h"
#include "policy/trust.h"
#include "secrets/source.h"

static const char usage[] = "Usage: keyward policy check FILE\n"
                            "       keyward policy trust FILE\n"
                            "\n"
                            "check validates a policy file and prints what it allows: each credential\n"
                            "with its source, whether that source can be read now, the sandbox variable\n"
                            "and the placeholder clients send in place of the secret; then each route.\n"
                            "Errors name FILE:LINE:COLUMN; the exit status is 2 for an invalid policy,\n"
                            "1 if it is valid but a credential's source cannot be read, else 0.\n"
                            "Secret values are never printed. See docs/policy.md.\n"
                            "\n"
                            "trust takes FILE, as it is now, for yours. keyward run and keyward proxy\n"
                            "refuse a policy file that changed in a place a sandbox could write while it\n"
                            "ran (CMD may have written it); review it with check, then trust it. A valid\n"
                            "policy only; the exit status is 2 for an invalid one, 1 on other errors.\n";

/* Writes s, a string of the policy that no rule of the loader confines to
 * printable characters (a path, an exec: command, an audience), on one
 * line: every control byte, line breaks included, becomes '?' (log_clean),
 * so a value cannot add lines of its own to the report either. */
static void put_value(FILE *out, const char *s)
{
	char chunk[256];
	size_t n = strlen(s);
	for (size_t i = 0; i < n;) {
		size_t k = n - i < sizeof(chunk) ? n - i : sizeof(chunk);
		/* a C1 control (0xc2 0x80..0x9f) is not cut between two chunks */
		if (k < n - i && (unsigned char)s[i + k - 1] == 0xc2)
			k--;
		memcpy(chunk, s + i, k);
		log_clean(chunk, k, "");
		fwrite(chunk, 1, k, out);
		i += k;
	}
}

static const char *inject_name(const struct policy_route *r, char *buf, size_t n)
{
	switch (r->inject) {
	case INJECT_NONE:
		return "none";
	case INJECT_BEARER:
		return "bearer";
	case INJECT_BASIC:
		if (r->inject_user)
			snprintf(buf, n, "basic (user %s)", r->inject_user);
		else
			snprintf(buf, n, "basic (client's user name)");
		return buf;
	case INJECT_HEADER:
		snprintf(buf, n, "header %s: %s", r->inject_header, r->inject_value);
		return buf;
	case INJECT_QUERY:
		snprintf(buf, n, "query parameter %s", r->inject_query);
		return buf;
	case INJECT_SWAP:
		return "swap placeholders";
	case INJECT_SIGV4:
		return "sigv4 (re-sign with the real AWS key)";
	}
	return "?";
}

static void print_limit(FILE *out, const char *name, uint64_t v, const char *unit, const char *def)
{
	if (v)
		fprintf(out, "    %-11s %llu%s\n", name, (unsigned long long)v, unit);
	else
		fprintf(out, "    %-11s %s\n", name, def);
}

/* What `keyward run` will set up (keyward proxy ignores the section). */
static void print_sandbox(FILE *out, const struct policy_sandbox *sb)
{
	fprintf(out, "\nsandbox (keyward run):\n");
	fprintf(out, "  workspace:   ");
	put_value(out, sb->workspace ? sb->workspace : "--workspace, else the current directory");
	for (size_t i = 0; i < sb->n_paths; i++) {
		fprintf(out, "\n  %s  ", sb->paths[i].write ? "read-write:" : "read-only: ");
		put_value(out, sb->paths[i].path);
	}
	fprintf(out, "\n");
	fprintf(out, "  env passed:  ");
	if (!sb->env)
		fprintf(out, "(none)");
	for (char **e = sb->env; e && *e; e++)
		fprintf(out, "%s%s", e == sb->env ? "" : ", ", *e);
	fprintf(out, "\n  ports:       ");
	if (!sb->n_ports)
		fprintf(out, "(none besides the proxy's)");
	for (size_t i = 0; i < sb->n_ports; i++)
		fprintf(out, "%s%u", i ? ", " : "", (unsigned)sb->ports[i]);
	fprintf(out, "\n  landlock:    %s\n  limits:\n",
	        sb->require_landlock ? "required" : "auto (used where the kernel has it)");
	print_limit(out, "memory:", sb->memory, " bytes", "no limit");
	print_limit(out, "pids:", sb->pids, "", "4096 where a cgroup is writable");
	print_limit(out, "cpu:", sb->cpu_percent, "% of one core", "no limit");
	print_limit(out, "processes:", sb->processes, "", "4096");
	print_limit(out, "open_files:", sb->open_files, "", "4096");
	print_limit(out, "file_size:", sb->file_size, " bytes", "no limit");
	print_limit(out, "tmp_size:", sb->tmp_size, " bytes", "512 MiB each for /tmp and $HOME");
}

/* A minted token: where it comes from and what it is narrowed to. */
static void print_strv(FILE *out, const char *label, char **v, size_t step)
{
	if (!v)
		return;
	fprintf(out, "    %-13s", label);
	for (size_t i = 0; v[i]; i += step)
		fprintf(out, "%s%s%s%s", i ? ", " : "", v[i], step == 2 ? ": " : "", step == 2 ? v[i + 1] : "");
	fprintf(out, "\n");
}

static void print_mint(FILE *out, const struct policy_mint *m)
{
	fprintf(out, "    token from:  ");
	put_value(out, m->url);
	fprintf(out, "%s\n", m->allow_private ? " (private address allowed)" : "");
	print_strv(out, "scopes:", m->scopes, 1);
	if (m->audience) {
		fprintf(out, "    audience:    ");
		put_value(out, m->audience);
		fprintf(out, "\n");
	}
	if (m->app_id)
		fprintf(out, "    app:         %s, installation %s\n", m->app_id, m->installation_id);
	print_strv(out, "repos:", m->repositories, 1);
	print_strv(out, "permissions:", m->permissions, 2);
}

static void print_placeholder(FILE *out, const struct policy *p, struct secret *const *vals,
                              const struct policy_credential *c, const char *path, int *status)
{
	const struct policy_credential *holder = NULL;
	for (size_t i = 0; !holder && i < p->n_creds; i++)
		if (source_placeholder_holds(c->placeholder, vals[i]))
			holder = &p->creds[i];
	fprintf(out, "    sandbox env: %s\n", c->env ? c->env : "(none)");
	if (!holder) {
		fprintf(out, "    placeholder: %s\n", c->placeholder);
		return;
	}
	fprintf(out, "    placeholder: (not shown: it holds the secret of credential %s)\n", holder->name);
	fprintf(stderr,
	        "%s: the placeholder of credential %s holds the secret of credential %s; the sandbox would see it: "
	        "write another placeholder:\n",
	        path, c->name, holder->name);
	*status = 2;
}

/* keyward policy trust FILE: p is FILE, loaded (a valid policy). */
static int trust(const char *path, struct policy *p)
{
	char state[PATH_MAX], why[PATH_MAX + 512] = "";
	policy_free(p);
	if (state_dir(state, sizeof(state), true, why, sizeof(why)) < 0 ||
	    trust_policy(state, path, why, sizeof(why)) < 0) {
		log_clean(why, strlen(why), "");
		fprintf(stderr, "keyward policy trust: %s\n", why);
		return 1;
	}
	printf("%s: trusted as it is now; a change to it is looked at again\n", path);
	return 0;
}

int cmd_policy(int argc, char **argv)
{
	if (cli_wants_help(argc, argv)) {
		fputs(usage, stdout);
		return 0;
	}
	if (argc != 3 || (!streq(argv[1], "check") && !streq(argv[1], "trust"))) {
		fputs(usage, stderr);
		return 2;
	}
	struct policy *p;
	struct policy_error err;
	if (policy_load(argv[2], &p, &err) < 0) {
		log_clean(err.message, strlen(err.message), "");
		fprintf(stderr, "%s\n", err.message);
		return 2;
	}
	if (streq(argv[1], "trust"))
		return trust(argv[2], p);
	/* The report is made in memory and cleaned before it is shown: paths,
	 * exec: commands and other strings of a policy from a repository may
	 * hold escape sequences (YAML's "\e") that would hide or rewrite lines
	 * of the report on the reviewer's terminal. */
	char *text = NULL;
	size_t len = 0;
	FILE *out = open_memstream(&text, &len);
	if (!out) {
		fprintf(stderr, "keyward: out of memory\n");
		policy_free(p);
		return 1;
	}

	/* Every secret that can be read without side effects (exec: commands
	 * are not run), so that no placeholder printed holds one. */
	struct secret **vals = calloc(p->n_creds + 1, sizeof(*vals));
	int *rs = calloc(p->n_creds + 1, sizeof(*rs));
	char(*errs)[512] = calloc(p->n_creds + 1, sizeof(*errs));
	if (!vals || !rs || !errs) {
		fprintf(stderr, "keyward: out of memory\n");
		free(vals), free(rs), free(errs);
		fclose(out), free(text);
		policy_free(p);
		return 1;
	}
	for (size_t i = 0; i < p->n_creds; i++) {
		const struct policy_credential *c = &p->creds[i];
		if (c->source != SOURCE_PARTS && c->source != SOURCE_EXEC)
			rs[i] = source_fetch(c, NULL, &vals[i], errs[i], sizeof(errs[i]));
	}

	int status = 0;
	size_t n_whole = 0;
	for (size_t i = 0; i < p->n_creds; i++)
		n_whole += !p->creds[i].parent;
	fprintf(out, "%s: valid policy, %zu credential%s, %zu route%s\n", argv[2], n_whole, n_whole == 1 ? "" : "s",
	        p->n_routes, p->n_routes == 1 ? "" : "s");
	if (p->n_creds)
		fprintf(out, "\ncredentials:\n");
	for (size_t i = 0; i < p->n_creds; i++) {
		const struct policy_credential *c = &p->creds[i];
		if (c->source == SOURCE_PARTS) {
			/* its parts follow, each with its source */
			fprintf(out, "  %s\n    kind:        %s\n", c->name, policy_kind_name(c->kind));
			if (c->mint)
				print_mint(out, c->mint);
			if (c->env || c->mint)
				print_placeholder(out, p, vals, c, argv[2], &status);
			continue;
		}
		if (c->source == SOURCE_EXEC) {
			/* A credential_process command may mint a token, prompt or
			 * call out: checking a policy must not have side effects. */
			fprintf(out, "  %s\n    from:        exec:", c->name);
			put_value(out, c->source_arg);
			fprintf(out, " (not run by policy check)\n");
			print_placeholder(out, p, vals, c, argv[2], &status);
			continue;
		}
		int r = rs[i];
		fprintf(out, "  %s\n    from:        %s:", c->name, policy_source_name(c->source));
		put_value(out, c->source_arg);
		fprintf(out, " (%s)\n", r < 0 ? "cannot be read now" : "readable");
		if (r < 0) {
			fprintf(out, "                 ");
			put_value(out, errs[i]);
			fprintf(out, "\n");
			if (status == 0)
				status = 1;
		}
		print_placeholder(out, p, vals, c, argv[2], &status);
	}
	fprintf(out, "\nroutes (first match wins; anything else is denied):\n");
	for (size_t i = 0; i < p->n_routes; i++) {
		const struct policy_route *r = &p->routes[i];
		char ib[300], port[16] = "";
		if (r->port)
			snprintf(port, sizeof(port), ":%u", r->port);
		fprintf(out, "  [%zu] %s://%s%s%s  (line %d)\n", i, r->scheme == SCHEME_HTTPS ? "https" : "http",
		        r->wildcard ? "*" : "", r->host, port, r->line);
		fprintf(out, "      methods: ");
		if (!r->methods)
			fprintf(out, "all");
		for (char **m = r->methods; m && *m; m++)
			fprintf(out, "%s%s", m == r->methods ? "" : ", ", *m);
		fprintf(out, "\n      paths:   ");
		if (!r->paths)
			fprintf(out, "all");
		for (char **g = r->paths; g && *g; g++)
			fprintf(out, "%s%s", g == r->paths ? "" : ", ", *g);
		fprintf(out, "\n");
		if (r->credential)
			fprintf(out, "      credential: %s, inject: %s\n", r->credential->name,
			        inject_name(r, ib, sizeof(ib)));
		if (r->allow_private)
			fprintf(out, "      may dial loopback/private addresses\n");
		if (r->upstream_ca) {
			fprintf(out, "      extra upstream CA: ");
			put_value(out, r->upstream_ca);
			fprintf(out, "\n");
		}
	}
	if (p->n_routes == 0)
		fprintf(out, "  (none: every request is denied)\n");
	print_sandbox(out, &p->sandbox);
	for (size_t i = 0; i < p->n_creds; i++)
		secret_free(vals[i]);
	free(vals), free(rs), free(errs);
	policy_free(p);
	if (fclose(out) != 0) {
		free(text);
		fprintf(stderr, "keyward: out of memory\n");
		return 1;
	}
	log_clean(text, len, "\n");
	if (fwrite(text, 1, len, stdout) != len)
		status = 1;
	free(text);
	return status;
}
