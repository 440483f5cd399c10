#!/usr/bin/perl
# The location store on mod_dbd (SipLocation dbd):
#   * SQLite, one node: bindings survive stop/start and graceful restarts
#     because they live in the database, not in the engine;
#   * PostgreSQL, two nodes sharing one database: a REGISTER on node A makes
#     a request on node B reach (here: be redirected to) the user.
use strict;
use warnings;
use Test::More;
use File::Temp qw(tempdir);
use Time::HiRes qw(sleep time);
use SipTest qw(wait_until);
use SipRegTest;

my $MODDIR = '/usr/lib/apache2/modules';
ok(-e "$MODDIR/mod_dbd.so", 'mod_dbd is installed') or BAIL_OUT('mod_dbd missing');

sub dbd_conf {
    my ($driver, $params) = @_;
    return "LoadModule dbd_module $MODDIR/mod_dbd.so\nDBDriver $driver\nDBDParams \"$params\"\n"
         . "SipLocation dbd\n";
}

# ------------------------------------------------------------ SQLite, restarts
{
    my $dbdir = tempdir('mod_sip_dbd_XXXXXX', TMPDIR => 1, CLEANUP => 1);
    chmod 0777, $dbdir;
    my $t = SipRegTest->new(server_conf => dbd_conf('sqlite3', "$dbdir/location.db"));
    my $r = $t->register(user => 'sq', contacts => [ '<sip:sq@127.0.0.1:5091>;q=0.5', '<sip:sq2@127.0.0.1:5092>' ],
                         expires => 600);
    is($r && $r->code, 200, 'sqlite: REGISTER two contacts -> 200');
    my %b = SipRegTest::binding_map($r);
    is(join(' ', sort keys %b), 'sip:sq2@127.0.0.1:5092 sip:sq@127.0.0.1:5091', 'sqlite: both bindings listed');
    ok(-s "$dbdir/location.db", 'sqlite: the database file holds them');
    ok($t->error_log =~ /kept in the mod_dbd database/, 'sqlite: the engine uses the database store');

    ok($t->apachectl('graceful'), 'sqlite: graceful restart');
    sleep 1.5;
    my ($f, %after) = $t->fetch('sq');
    is(join(' ', sort keys %after), 'sip:sq2@127.0.0.1:5092 sip:sq@127.0.0.1:5091', 'sqlite: bindings kept across graceful');
    cmp_ok($after{'sip:sq@127.0.0.1:5091'}{expires} // 0, '<=', 600, 'sqlite: expiry not renewed');
    is($after{'sip:sq@127.0.0.1:5091'}{q}, '0.5', 'sqlite: q kept');

    $t->stop;
    $t->start;
    ($f, %after) = $t->fetch('sq');
    is(join(' ', sort keys %after), 'sip:sq2@127.0.0.1:5092 sip:sq@127.0.0.1:5091', 'sqlite: bindings kept across stop/start');

    # out of order and removal go through the database too
    $r = $t->register(user => 'sq', call_id => 'fixed@dbd', cseq => 5, contacts => [ '<sip:sq@127.0.0.1:5091>' ], expires => 300);
    is($r && $r->code, 200, 'sqlite: refresh with a new Call-ID');
    $r = $t->register(user => 'sq', call_id => 'fixed@dbd', cseq => 4, contacts => [ '<sip:sq@127.0.0.1:5091>' ], expires => 300);
    is($r && $r->code, 500, 'sqlite: older CSeq for the same Call-ID -> 500');
    $r = $t->register(user => 'sq', call_id => 'fixed@dbd', cseq => 6, contacts => [ '*' ], expires => 0);
    is($r && $r->code, 200, 'sqlite: Contact * removes everything');
    my $m = $t->request_to('sq');
    is($m && $m->code, 480, 'sqlite: known user without bindings -> 480');
    $m = $t->request_to('never');
    is($m && $m->code, 404, 'sqlite: never registered -> 404');
    $t->stop;
}

# ------------------------------------- SQLite: a table of an older version, limits, display names
{
    my $dbdir = tempdir('mod_sip_dbd_XXXXXX', TMPDIR => 1, CLEANUP => 1);
    chmod 0777, $dbdir;
    my $db = "$dbdir/old.db";
    # the table as mod_sip made it before the display column
    ok(system('sqlite3', $db, "CREATE TABLE sip_location (aor VARCHAR(255) NOT NULL, contact VARCHAR(1024) NOT NULL, "
              . "params VARCHAR(1024) NOT NULL DEFAULT '', call_id VARCHAR(255) NOT NULL, cseq BIGINT NOT NULL, "
              . "expires BIGINT NOT NULL, q INTEGER NOT NULL, path VARCHAR(2048), PRIMARY KEY (aor, contact)); "
              . "INSERT INTO sip_location VALUES ('sip:old\@127.0.0.1', 'sip:old\@127.0.0.1:5095', '', 'c\@old', 1, "
              . int((time + 600) * 1e6) . ", 1000, '');") == 0, 'sqlite: a table without the display column');
    chmod 0666, $db;
    my $t = SipRegTest->new(server_conf => dbd_conf('sqlite3', $db), vhost_conf => 'SipMaxContacts 2');
    my ($f, %b) = $t->fetch('old');
    ok($b{'sip:old@127.0.0.1:5095'}, 'sqlite: the binding of the old table is read');
    my $r = $t->register(user => 'dn', expires => 600, contacts => [ "\"Desk\tPhone\" <sip:dn\@127.0.0.1:5096>;+sip.instance=\"<urn:a\tb>\"" ]);
    is($r && $r->code, 200, 'sqlite: REGISTER with a display name (the column was added) -> 200');
    $t->stop;
    $t->start;
    ($f) = $t->fetch('dn');
    my ($c) = SipRegTest::contacts_of($f);
    ok($c && $c->{raw} =~ /^"Desk\tPhone" <sip:dn\@127\.0\.0\.1:5096>/ && $c->{params} eq ";+sip.instance=\"<urn:a\tb>\"",
       'sqlite: after stop/start the display name and the TAB in the parameter come back from the database')
        or diag(SipRegTest::dump_contacts($f));
    $r = $t->register(user => 'dn', expires => 600, contacts => [ '<sip:dn2@127.0.0.1:5097>, <sip:dn3@127.0.0.1:5098>' ]);
    is($r && $r->code, 403, 'sqlite: SipMaxContacts 2 applies to the database store: a third binding -> 403');
    ($f, %b) = $t->fetch('dn');
    is(scalar(keys %b), 1, 'sqlite: ... nothing stored');
    $r = $t->register(user => 'dn', expires => 600, contacts => [ '<sip:dn2@127.0.0.1:5097>' ]);
    is($r && $r->code, 200, 'sqlite: a second binding -> 200');
    $r = $t->register(user => 'dn', expires => 600, contacts => [ '<sip:dn2@127.0.0.1:5097>;q=nan' ]);
    is($r && $r->code, 400, 'sqlite: q=nan -> 400');
    $t->stop;
}

# ------------------------------------------------ PostgreSQL, two nodes
{
    my $pgsrv = SipRegTest::postgres_start();
    my $params = $pgsrv->{params};
    my $a = SipRegTest->new(server_conf => dbd_conf('pgsql', $params));
    my $b = SipRegTest->new(server_conf => dbd_conf('pgsql', $params), vhost_conf => 'SipMode redirect');

    my $r = $a->register(user => 'bob', contacts => [ '<sip:bob@127.0.0.1:5093>' ], expires => 600);
    is($r && $r->code, 200, 'node A: REGISTER bob -> 200');
    my $m = $b->request_to('bob', method => 'INVITE');
    is($m && $m->code, 302, 'node B: INVITE bob -> 302 (the binding made on node A)');
    my ($c) = $m ? $m->headers('contact') : ();
    like($c // '', qr{^<sip:bob\@127\.0\.0\.1:5093>;expires=\d+;q=1$}, 'node B: redirected to the contact registered on A');

    # a change on B is seen by A
    $r = $b->register(user => 'bob', contacts => [ '<sip:bob@127.0.0.1:5093>' ], expires => 0);
    is($r && $r->code, 200, 'node B: remove the binding');
    my ($f, %left) = $a->fetch('bob');
    is(scalar(keys %left), 0, 'node A: the removal made on B is seen');
    $m = $a->request_to('bob');
    is($m && $m->code, 480, 'node A: bob known, no binding -> 480');

    $a->stop;
    $b->stop;
    ok($pgsrv->{stop}->('fast'), 'PostgreSQL stopped');
}

done_testing;
