#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "policy/policy.h"
#include "secrets/source.h"

static const char usage[] = "Usage: keyward policy check FILE\n"
                            "\n"
                            "Validates a policy file and prints what it allows: each credential with\n"
                            "its source, whether that source can be read now, the sandbox variable and\n"
                            "the placeholder clients send in place of the secret; then each route.\n"
                            "Errors name FILE:LINE:COLUMN; the exit status is 2 for an invalid policy,\n"
                            "1 if it is valid but a credential's source cannot be read, else 0.\n"
                            "Secret values are never printed. See docs/policy.md.\n";

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

static void print_limit(const char *name, uint64_t v, const char *unit, const char *def)
{
	if (v)
		printf("    %-11s %llu%s\n", name, (unsigned long long)v, unit);
	else
		printf("    %-11s %s\n", name, def);
}

/* What `keyward run` will set up (keyward proxy ignores the section). */
static void print_sandbox(const struct policy_sandbox *sb)
{
	printf("\nsandbox (keyward run):\n");
	printf("  workspace:   %s\n", sb->workspace ? sb->workspace : "--workspace, else the current directory");
	for (size_t i = 0; i < sb->n_paths; i++)
		printf("  %s  %s\n", sb->paths[i].write ? "read-write:" : "read-only: ", sb->paths[i].path);
	printf("  env passed:  ");
	if (!sb->env)
		printf("(none)");
	for (char **e = sb->env; e && *e; e++)
		printf("%s%s", e == sb->env ? "" : ", ", *e);
	printf("\n  ports:       ");
	if (!sb->n_ports)
		printf("(none besides the proxy's)");
	for (size_t i = 0; i < sb->n_ports; i++)
		printf("%s%u", i ? ", " : "", (unsigned)sb->ports[i]);
	printf("\n  landlock:    %s\n  limits:\n",
	       sb->require_landlock ? "required" : "auto (used where the kernel has it)");
	print_limit("memory:", sb->memory, " bytes", "no limit");
	print_limit("pids:", sb->pids, "", "4096 where a cgroup is writable");
	print_limit("cpu:", sb->cpu_percent, "% of one core", "no limit");
	print_limit("processes:", sb->processes, "", "4096");
	print_limit("open_files:", sb->open_files, "", "4096");
	print_limit("file_size:", sb->file_size, " bytes", "no limit");
	print_limit("tmp_size:", sb->tmp_size, " bytes", "512 MiB each for /tmp and $HOME");
}

/* A minted token: where it comes from and what it is narrowed to. */
static void print_strv(const char *label, char **v, size_t step)
{
	if (!v)
		return;
	printf("    %-13s", label);
	for (size_t i = 0; v[i]; i += step)
		printf("%s%s%s%s", i ? ", " : "", v[i], step == 2 ? ": " : "", step == 2 ? v[i + 1] : "");
	printf("\n");
}

static void print_mint(const struct policy_mint *m)
{
	printf("    token from:  %s%s\n", m->url, m->allow_private ? " (private address allowed)" : "");
	print_strv("scopes:", m->scopes, 1);
	if (m->audience)
		printf("    audience:    %s\n", m->audience);
	if (m->app_id)
		printf("    app:         %s, installation %s\n", m->app_id, m->installation_id);
	print_strv("repos:", m->repositories, 1);
	print_strv("permissions:", m->permissions, 2);
}

int cmd_policy(int argc, char **argv)
{
	if (cli_wants_help(argc, argv)) {
		fputs(usage, stdout);
		return 0;
	}
	if (argc != 3 || strcmp(argv[1], "check") != 0) {
		fputs(usage, stderr);
		return 2;
	}
	struct policy *p;
	struct policy_error err;
	if (policy_load(argv[2], &p, &err) < 0) {
		fprintf(stderr, "%s\n", err.message);
		return 2;
	}

	int status = 0;
	size_t n_whole = 0;
	for (size_t i = 0; i < p->n_creds; i++)
		n_whole += !p->creds[i].parent;
	printf("%s: valid policy, %zu credential%s, %zu route%s\n", argv[2], n_whole, n_whole == 1 ? "" : "s",
	       p->n_routes, p->n_routes == 1 ? "" : "s");
	if (p->n_creds)
		printf("\ncredentials:\n");
	for (size_t i = 0; i < p->n_creds; i++) {
		const struct policy_credential *c = &p->creds[i];
		struct secret *s = NULL;
		char e[512];
		if (c->source == SOURCE_PARTS) {
			/* its parts follow, each with its source */
			printf("  %s\n    kind:        %s\n", c->name, policy_kind_name(c->kind));
			if (c->mint)
				print_mint(c->mint);
			if (c->env || c->mint)
				printf("    sandbox env: %s\n    placeholder: %s\n", c->env ? c->env : "(none)",
				       c->placeholder);
			continue;
		}
		if (c->source == SOURCE_EXEC) {
			/* A credential_process command may mint a token, prompt or
			 * call out: checking a policy must not have side effects. */
			printf("  %s\n    from:        exec:%s (not run by policy check)\n", c->name, c->source_arg);
			printf("    sandbox env: %s\n    placeholder: %s\n", c->env ? c->env : "(none)",
			       c->placeholder);
			continue;
		}
		int r = source_fetch(c, NULL, &s, e, sizeof(e));
		secret_free(s);
		printf("  %s\n    from:        %s:%s (%s)\n", c->name, policy_source_name(c->source), c->source_arg,
		       r < 0 ? "cannot be read now" : "readable");
		if (r < 0) {
			printf("                 %s\n", e);
			status = 1;
		}
		printf("    sandbox env: %s\n    placeholder: %s\n", c->env ? c->env : "(none)", c->placeholder);
	}
	printf("\nroutes (first match wins; anything else is denied):\n");
	for (size_t i = 0; i < p->n_routes; i++) {
		const struct policy_route *r = &p->routes[i];
		char ib[300], port[16] = "";
		if (r->port)
			snprintf(port, sizeof(port), ":%u", r->port);
		printf("  [%zu] %s://%s%s%s  (line %d)\n", i, r->scheme == SCHEME_HTTPS ? "https" : "http",
		       r->wildcard ? "*" : "", r->host, port, r->line);
		printf("      methods: ");
		if (!r->methods)
			printf("all");
		for (char **m = r->methods; m && *m; m++)
			printf("%s%s", m == r->methods ? "" : ", ", *m);
		printf("\n      paths:   ");
		if (!r->paths)
			printf("all");
		for (char **g = r->paths; g && *g; g++)
			printf("%s%s", g == r->paths ? "" : ", ", *g);
		printf("\n");
		if (r->credential)
			printf("      credential: %s, inject: %s\n", r->credential->name,
			       inject_name(r, ib, sizeof(ib)));
		if (r->allow_private)
			printf("      may dial loopback/private addresses\n");
		if (r->upstream_ca)
			printf("      extra upstream CA: %s\n", r->upstream_ca);
	}
	if (p->n_routes == 0)
		printf("  (none: every request is denied)\n");
	print_sandbox(&p->sandbox);
	policy_free(p);
	return status;
}
