//go:build static_glibc

// Static glibc and NSS: libc.a carries the "files" and "dns" NSS services, but any other service
// that /etc/nsswitch.conf names (systemd, sss, ldap, mdns...) is loaded with dlopen, which in a
// static binary loads a second, shared libc into the process: on a Debian 12 host with
// "passwd: files systemd", a user or group lookup that misses /etc/passwd (PHP chown() to an
// unknown name) crashed the binary with SIGSEGV. This constructor runs before main (glibc's
// __libc_start_main runs .init_array first) and pins every NSS database to the built-in
// services, so nsswitch.conf is never read and nothing is ever dlopen'ed for NSS.
// Users, groups and host names then come from /etc files and DNS only (no LDAP/sssd/systemd users).
// Built only with the static_glibc tag (link-static.sh adds it to the static link).
package main

/*
extern int __nss_configure_lookup(const char *dbname, const char *service_line);

__attribute__((constructor)) static void durango_static_nss(void) {
	static const char *const files_only[] = {
		"aliases", "ethers", "group", "gshadow", "initgroups", "netgroup", "networks",
		"passwd", "protocols", "publickey", "rpc", "services", "shadow",
	};
	for (unsigned i = 0; i < sizeof files_only / sizeof files_only[0]; i++)
		__nss_configure_lookup(files_only[i], "files");
	__nss_configure_lookup("hosts", "files dns");
}
*/
import "C"
