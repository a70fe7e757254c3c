# Build and install incidentd where Debian expects it.
#   make                  release build
#   sudo make install     binaries, config, rules, templates, plugins, unit and drop-in folder,
#                         sysusers, tmpfiles, polkit rule, optional drop-ins, man pages
#   make install DESTDIR=/tmp/pkg PREFIX=/usr   (staged, as packagers do)
#   sudo make uninstall
# After a real install: systemd-sysusers; systemd-tmpfiles --create; systemctl daemon-reload;
# systemctl enable --now incidentd.

PREFIX ?= /usr
SYSCONFDIR ?= /etc
DESTDIR ?=
CARGO ?= cargo

BINDIR := $(PREFIX)/bin
LIBDIR := $(PREFIX)/lib/incidentd
PLUGINSDIR := $(LIBDIR)/plugins
UNITDIR := $(PREFIX)/lib/systemd/system
SYSUSERSDIR := $(PREFIX)/lib/sysusers.d
TMPFILESDIR := $(PREFIX)/lib/tmpfiles.d
POLKITDIR := $(PREFIX)/share/polkit-1/rules.d
MANDIR := $(PREFIX)/share/man
DOCDIR := $(PREFIX)/share/doc/incidentd
CONFDIR := $(SYSCONFDIR)/incidentd
DROPINDIR := $(SYSCONFDIR)/systemd/system/incidentd.service.d

# Where the built binaries are (the tests install their own debug build).
TARGET ?= target/release
BINS := $(TARGET)/incidentd $(TARGET)/incidentctl

all: $(BINS)

$(BINS):
	$(CARGO) build --release --bins

install: $(BINS)
	install -Dm0755 $(TARGET)/incidentd $(DESTDIR)$(BINDIR)/incidentd
	install -Dm0755 $(TARGET)/incidentctl $(DESTDIR)$(BINDIR)/incidentctl
	install -d -m0755 $(DESTDIR)$(CONFDIR)/rules.d $(DESTDIR)$(CONFDIR)/templates
	# The shipped config, its plugins_dir pointed at the installed plugins.
	sed 's|^plugins_dir = .*|plugins_dir = "$(PLUGINSDIR)"|' etc/incidentd.toml \
		> $(DESTDIR)$(CONFDIR)/incidentd.toml
	chmod 0644 $(DESTDIR)$(CONFDIR)/incidentd.toml
	install -m0644 etc/rules.d/*.toml $(DESTDIR)$(CONFDIR)/rules.d/
	install -m0644 etc/templates/* $(DESTDIR)$(CONFDIR)/templates/
	for p in plugins/*/; do \
		n=$$(basename $$p); install -d -m0755 $(DESTDIR)$(PLUGINSDIR)/$$n; \
		for f in $$p*; do \
			if [ -x $$f ]; then m=0755; else m=0644; fi; \
			install -m$$m $$f $(DESTDIR)$(PLUGINSDIR)/$$n/; \
		done; \
	done
	install -m0644 plugins/README.md $(DESTDIR)$(PLUGINSDIR)/README.md
	install -d -m0755 $(DESTDIR)$(UNITDIR)
	sed 's|/usr/bin/|$(BINDIR)/|g; s|/etc/incidentd/|$(CONFDIR)/|g' systemd/incidentd.service \
		> $(DESTDIR)$(UNITDIR)/incidentd.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/incidentd.service
	install -d -m0755 $(DESTDIR)$(DROPINDIR)
	install -Dm0644 systemd/remediation.conf $(DESTDIR)$(DOCDIR)/dropins/remediation.conf
	install -Dm0644 systemd/egress.conf $(DESTDIR)$(DOCDIR)/dropins/egress.conf
	install -Dm0644 systemd/incidentd.sysusers $(DESTDIR)$(SYSUSERSDIR)/incidentd.conf
	install -Dm0644 systemd/incidentd.tmpfiles $(DESTDIR)$(TMPFILESDIR)/incidentd.conf
	install -Dm0644 systemd/incidentd.polkit.rules $(DESTDIR)$(POLKITDIR)/50-incidentd.rules
	install -Dm0644 man/incidentd.8 $(DESTDIR)$(MANDIR)/man8/incidentd.8
	install -d -m0755 $(DESTDIR)$(MANDIR)/man1
	$(TARGET)/incidentctl man > $(DESTDIR)$(MANDIR)/man1/incidentctl.1
	chmod 0644 $(DESTDIR)$(MANDIR)/man1/incidentctl.1
	install -Dm0644 README.md $(DESTDIR)$(DOCDIR)/README.md

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/incidentd $(DESTDIR)$(BINDIR)/incidentctl
	rm -f $(DESTDIR)$(CONFDIR)/incidentd.toml
	rm -rf $(DESTDIR)$(CONFDIR)/rules.d $(DESTDIR)$(CONFDIR)/templates
	-rmdir $(DESTDIR)$(CONFDIR)
	rm -rf $(DESTDIR)$(LIBDIR)
	rm -f $(DESTDIR)$(UNITDIR)/incidentd.service
	-rmdir $(DESTDIR)$(DROPINDIR)
	rm -rf $(DESTDIR)$(DOCDIR)
	rm -f $(DESTDIR)$(SYSUSERSDIR)/incidentd.conf $(DESTDIR)$(TMPFILESDIR)/incidentd.conf
	rm -f $(DESTDIR)$(POLKITDIR)/50-incidentd.rules
	rm -f $(DESTDIR)$(MANDIR)/man8/incidentd.8 $(DESTDIR)$(MANDIR)/man1/incidentctl.1

.PHONY: all install uninstall
