#!/bin/sh
# Drover's pre-install script: the .deb's preinst and the .rpm's %pre.
# Makes the drover system user and group the services run as, when missing.
# Enables and starts nothing: operators configure /etc/drover first.
set -e

if ! getent group drover >/dev/null 2>&1; then
	groupadd --system drover
fi
if ! getent passwd drover >/dev/null 2>&1; then
	shell=/usr/sbin/nologin
	[ -x "$shell" ] || shell=/sbin/nologin
	[ -x "$shell" ] || shell=/bin/false
	useradd --system --gid drover --home-dir /var/lib/drover --no-create-home \
		--shell "$shell" --comment "Drover services" drover
fi
exit 0
