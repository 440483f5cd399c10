#!/usr/bin/perl
# SIP digest authentication with the password hashes (HA1) coming from each
# Apache authn provider that has realm hashes (SipAuthProvider):
#   file  mod_authn_file, an htdigest AuthUserFile
#   dbm   mod_authn_dbm, AuthDBMUserFile made with httxt2dbm (key user:realm,
#         value the HA1), AuthDBMType GDBM
#   dbd   mod_authn_dbd + mod_dbd, AuthDBDUserRealmQuery on a SQLite file
#   "dbm file", a list (the DBM file of APR's default type, Berkeley DB on
#         Debian): a user only in the second is found, the first provider
#         that knows a user decides
# For each: REGISTER 401 (realm = AuthName), wrong password 401, unknown user
# 401 (both logged), right password 200 and the binding kept, over UDP and
# TCP; an INVITE proxied to another domain: 407, then with credentials on to
# the callee, its 200 back and the ACK through.
# Misconfigurations: a SipAuthProvider whose module is not loaded, or that
# has no realm hashes, or dbd without AuthDBDUserRealmQuery, stops httpd at
# startup; the default provider (file) not loaded, or a provider failing
# (DBM file missing), answers 500 and logs why.
use strict;
use warnings;
use Test::More;
use Digest::MD5 qw(md5_hex);
use IO::Socket::INET;
use IO::Select;
use Time::HiRes qw(time sleep);
use SipTest qw(parse_msg wait_until rand_token);
use SipRegTest;
use SipDigest qw(digest_challenge digest_credentials);

my $MODDIR = '/usr/lib/apache2/modules';
my $HTTXT2DBM = '/usr/sbin/httxt2dbm';
my $SQLITE3 = '/usr/bin/sqlite3';
my $realm = 'sip.test';

ok(-x $HTTXT2DBM, 'httxt2dbm installed (apache2-utils)') or BAIL_OUT('httxt2dbm missing');
ok(-x $SQLITE3, 'sqlite3 installed') or BAIL_OUT('sqlite3 missing');
for my $m (qw(authn_core authn_file authn_dbm authn_dbd dbd authn_anon)) {
    ok(-e "$MODDIR/mod_$m.so", "mod_$m installed") or BAIL_OUT("mod_$m missing");
}

sub ha1 { my ($user, $pw) = @_; return md5_hex("$user:$realm:$pw") }

sub load { return join '', map { "LoadModule ${_}_module $MODDIR/mod_$_.so\n" } @_ }

# ---------------------------------------------------------- password stores

sub write_file {
    my ($path, $text) = @_;
    open(my $fh, '>', $path) or die "$path: $!";
    print $fh $text;
    close $fh or die "$path: $!";
    chmod 0644, $path;
}

sub write_htdigest { my ($path, %pw) = @_; SipDigest::write_htdigest($path, $realm, %pw) }

# A DBM file as mod_authn_dbm reads it: key "user:realm", value the HA1.
sub write_dbm {
    my ($path, $type, %pw) = @_;
    write_file("$path.txt", join '', map { "$_:$realm " . ha1($_, $pw{$_}) . "\n" } sort keys %pw);
    my $rc = system($HTTXT2DBM, ($type ? ('-f', $type) : ()), '-i', "$path.txt", '-o', $path);
    die "httxt2dbm failed ($rc)" if $rc;
    chmod 0644, glob("$path*");
}

# A SQLite table for AuthDBDUserRealmQuery.
sub write_sqlite {
    my ($path, %pw) = @_;
    my $sql = "CREATE TABLE sip_users (name TEXT, realm TEXT, ha1 TEXT);\n"
            . join '', map { "INSERT INTO sip_users VALUES ('$_', '$realm', '" . ha1($_, $pw{$_}) . "');\n" } sort keys %pw;
    # a user of another realm with the same name must not be taken
    $sql .= "INSERT INTO sip_users VALUES ('dave', 'other.realm', '" . md5_hex("dave:other.realm:x") . "');\n";
    open(my $fh, '|-', $SQLITE3, $path) or die "sqlite3: $!";
    print $fh $sql;
    close $fh or die "sqlite3 failed ($?)";
    chmod 0644, $path;
}

# ---------------------------------------------------------------- digest

sub code { my $r = shift; return $r ? $r->code : 'no response' }

# ------------------------------------------------------------- REGISTER

# A challenge for REGISTER (over $tr); returns the 401's challenge.
sub reg_challenge {
    my ($t, $user, $tr, $label) = @_;
    my $r = $t->register(user => $user, transport => $tr, contacts => [ "<sip:$user\@127.0.0.1:5999>" ],
                         expires => 600);
    is(code($r), 401, "$label: REGISTER $user without credentials -> 401");
    return digest_challenge($r, 'www-authenticate');
}

# REGISTER $user with $password (after a challenge); the final response.
sub reg_auth {
    my ($t, $user, $password, $ch, %o) = @_;
    my $uri = 'sip:127.0.0.1:' . $t->sip_port;
    return $t->register(user => $user, transport => $o{transport} // 'udp',
                        contacts => $o{contacts} // [], expires => $o{expires},
                        headers => [ Authorization => digest_credentials(challenge => $ch, user => $o{as} // $user,
                                                                  password => $password, method => 'REGISTER',
                                                                  uri => $uri) ]);
}

# The whole registrar round for one user over one transport.
sub check_register {
    my ($t, $label, $user, $password, $tr) = @_;
    my $contact = "sip:$user\@127.0.0.1:" . (5100 + length($user)) . ($tr eq 'tcp' ? ';transport=tcp' : '');
    my $r = $t->register(user => $user, transport => $tr, contacts => [ "<$contact>" ], expires => 600);
    is(code($r), 401, "$label: REGISTER $user over \U$tr\E without credentials -> 401");
    my $ch = digest_challenge($r, 'www-authenticate');
    ok($ch && $ch->{realm} eq $realm && length($ch->{nonce} // '') && ($ch->{qop} // '') eq 'auth',
       "$label: the 401 has WWW-Authenticate: Digest realm=\"$realm\" (AuthName), a nonce, qop=auth")
        or diag($r ? $r->head : 'no response');

    my $mark = $t->log_mark;
    $r = reg_auth($t, $user, "not-$password", $ch, transport => $tr, contacts => [ "<$contact>" ], expires => 600);
    is(code($r), 401, "$label: REGISTER $user over \U$tr\E with a wrong password -> 401");
    ok($t->wait_log($mark, qr/sip auth: wrong password for \Q$user\E in realm \Q$realm\E/),
       "$label: error log: wrong password for $user");

    $r = reg_auth($t, $user, $password, $ch, transport => $tr, contacts => [ "<$contact>" ], expires => 600);
    is(code($r), 200, "$label: REGISTER $user over \U$tr\E with the right password -> 200");
    my %b = SipRegTest::binding_map($r);
    ok($b{$contact}, "$label: the 200 lists the new binding $contact") or diag(SipRegTest::dump_contacts($r));

    my ($f, %now) = $t->fetch($user, transport => $tr);
    is(code($f), 401, "$label: a fetching REGISTER without credentials -> 401 (lists nothing)");
    ok(!%now, "$label: ... and the 401 shows no binding");
    $ch = digest_challenge($f, 'www-authenticate');
    $f = reg_auth($t, $user, $password, $ch, transport => $tr);
    %now = SipRegTest::binding_map($f);
    is(code($f), 200, "$label: fetching REGISTER with credentials -> 200");
    ok($now{$contact} && ($now{$contact}{expires} // 0) > 500,
       "$label: the fetch lists the stored binding $contact") or diag(SipRegTest::dump_contacts($f));
}

sub check_unknown {
    my ($t, $label, $user, $tr) = @_;
    my $ch = reg_challenge($t, $user, $tr, $label);
    my $mark = $t->log_mark;
    my $r = reg_auth($t, $user, 'whatever', $ch, transport => $tr, contacts => [ "<sip:$user\@127.0.0.1:5998>" ],
                     expires => 600);
    is(code($r), 401, "$label: REGISTER for unknown user $user over \U$tr\E with credentials -> 401");
    ok(digest_challenge($r, 'www-authenticate'), "$label: ... a new challenge");
    ok($t->wait_log($mark, qr/sip auth: unknown user \Q$user\E in realm \Q$realm\E/),
       "$label: error log: unknown user $user");
}

# ------------------------------------------------------- INVITE as a proxy

# Final response on $sock (UDP or TCP) for Call-ID $cid, or undef.
sub read_final {
    my ($t, $tr, $sock, $cid, $timeout) = @_;
    my $end = time + ($timeout // 5);
    while ((my $left = $end - time) > 0) {
        my $m;
        if ($tr eq 'tcp') {
            $m = $t->read_response($sock, $left) or return undef;
        } else {
            my $raw = $t->udp_recv($sock, $left) // return undef;
            $m = parse_msg($raw);
        }
        next unless $m && $m->is_response && ($m->header('call-id') // '') eq $cid;
        return $m if $m->is_final;
    }
    return undef;
}

# A request on the callee's socket within $timeout: (msg, peer address).
sub uas_recv {
    my ($uas, $timeout) = @_;
    my $sel = IO::Select->new($uas);
    my $end = time + ($timeout // 5);
    while ((my $left = $end - time) > 0) {
        last unless $sel->can_read($left);
        my $buf;
        my $peer = recv($uas, $buf, 70000, 0);
        next unless defined $peer && length $buf;
        my $m = parse_msg($buf);
        next if !$m || $m->is_response;
        return ($m, $peer);
    }
    return;
}

# INVITE sip:carol@127.0.0.1:<callee> sent to us (SipProxyOutside On):
# 407; wrong password 407; with credentials it reaches the callee, whose
# 200 comes back; the ACK (never challenged) follows the Record-Route.
sub check_proxy_invite {
    my ($t, $label, $user, $password, $tr) = @_;
    my $TR = uc $tr;
    my $uas = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0, Proto => 'udp') or die $!;
    my $target = 'sip:carol@127.0.0.1:' . $uas->sockport;
    my $sock = $tr eq 'tcp' ? $t->tcp_connect : $t->udp_socket;
    my $send = sub { $tr eq 'tcp' ? $t->send_raw($sock, $_[0]) : $t->udp_send($_[0], sock => $sock) };
    my $cid = rand_token(16) . '@auth-providers';
    my $ftag = rand_token(8);
    my $cseq = 0;
    my $invite = sub {
        my (@h) = @_;
        return $t->sip_request(method => 'INVITE', uri => $target, transport => $TR, sock => $sock,
                               call_id => $cid, from_tag => $ftag, cseq => ++$cseq,
                               headers => [ Contact => "<sip:$user\@127.0.0.1:" . $sock->sockport
                                                       . ($tr eq 'tcp' ? ';transport=tcp' : '') . '>', @h ]);
    };

    my $inv = $invite->();
    $send->($inv);
    my $r = read_final($t, $tr, $sock, $cid);
    is(code($r), 407, "$label: INVITE over $TR to another domain without credentials -> 407");
    my $ch = digest_challenge($r, 'proxy-authenticate');
    ok($ch && $ch->{realm} eq $realm && !$r->header('www-authenticate'),
       "$label: the 407 has Proxy-Authenticate with realm \"$realm\"") or diag($r ? $r->head : 'no response');
    $send->($t->ack_for($inv, $r)) if $r;

    $inv = $invite->('Proxy-Authorization' => digest_credentials(challenge => $ch, user => $user, password => "not-$password",
                                                           method => 'INVITE', uri => $target));
    $send->($inv);
    $r = read_final($t, $tr, $sock, $cid);
    is(code($r), 407, "$label: INVITE over $TR with a wrong password -> 407");
    $send->($t->ack_for($inv, $r)) if $r;
    my ($early) = uas_recv($uas, 0.2);
    ok(!$early, "$label: no unauthenticated INVITE reached the callee");

    $inv = $invite->('Proxy-Authorization' => digest_credentials(challenge => $ch, user => $user, password => $password,
                                                          method => 'INVITE', uri => $target));
    $send->($inv);
    my ($got, $peer) = uas_recv($uas, 5);
    ok($got && $got->method eq 'INVITE' && ($got->header('call-id') // '') eq $cid,
       "$label: the authenticated INVITE reaches the callee");
    if ($got) {
        my $resp = "SIP/2.0 200 OK\r\n"
            . join('', map { "Via: $_\r\n" } $got->headers('via'))
            . join('', map { "Record-Route: $_\r\n" } $got->headers('record-route'))
            . 'From: ' . $got->header('from') . "\r\n"
            . 'To: ' . $got->header('to') . ";tag=callee\r\n"
            . 'Call-ID: ' . $got->header('call-id') . "\r\n"
            . 'CSeq: ' . $got->header('cseq') . "\r\n"
            . "Contact: <$target>\r\nContent-Length: 0\r\n\r\n";
        send($uas, $resp, 0, $peer);
    }
    $r = read_final($t, $tr, $sock, $cid);
    is(code($r), 200, "$label: the callee's 200 comes back to the caller over $TR");
    my @rr = $r ? $r->headers('record-route') : ();
    my $ack = "ACK $target SIP/2.0\r\n"
        . "Via: SIP/2.0/$TR 127.0.0.1:" . $sock->sockport . ';branch=z9hG4bK' . rand_token(12) . ";rport\r\n"
        . "Max-Forwards: 70\r\n"
        . join('', map { "Route: $_\r\n" } reverse @rr)
        . "From: <sip:tester\@127.0.0.1>;tag=$ftag\r\n"
        . 'To: ' . ($r ? $r->header('to') : "<$target>") . "\r\n"
        . "Call-ID: $cid\r\nCSeq: $cseq ACK\r\nContent-Length: 0\r\n\r\n";
    $send->($ack);
    my $ga;
    wait_until(5, sub { my ($m) = uas_recv($uas, 0.2); $ga = $m if $m && $m->method eq 'ACK'; $ga });
    ok($ga && ($ga->header('call-id') // '') eq $cid, "$label: the ACK for the 200 (no credentials) reaches the callee");
}

# ------------------------------------------------------------ the servers

sub server {
    my (%o) = @_;
    return SipRegTest->new(
        server_conf => join("\n",
            load('authn_core', @{ $o{modules} }),
            @{ $o{server} || [] },
            '<Location "/">',
            '    SipAuth On',
            "    AuthName \"$realm\"",
            (map { "    $_" } @{ $o{location} }),
            '</Location>',
            ''),
        vhost_conf => 'SipProxyOutside On',
        setup => $o{setup},
    );
}

my %users = (alice => 'wonderland', bob => 'builder');

my @providers = (
    {   name => 'file',
        modules => [ 'authn_file' ],
        location => [ 'SipAuthProvider file', 'AuthUserFile @DIR@/users.htdigest' ],
        setup => sub { write_htdigest($_[0]->dir . '/users.htdigest', %users) },
    },
    {   name => 'dbm',
        modules => [ 'authn_dbm' ],
        location => [ 'SipAuthProvider dbm', 'AuthDBMType GDBM', 'AuthDBMUserFile @DIR@/users.gdbm' ],
        setup => sub { write_dbm($_[0]->dir . '/users.gdbm', 'GDBM', %users) },
    },
    {   name => 'dbd',
        modules => [ 'dbd', 'authn_dbd' ],
        server => [ 'DBDriver sqlite3', 'DBDParams @DIR@/users.db' ],
        location => [ 'SipAuthProvider dbd',
                      'AuthDBDUserRealmQuery "SELECT ha1 FROM sip_users WHERE name = %s AND realm = %s"' ],
        setup => sub { write_sqlite($_[0]->dir . '/users.db', %users) },
        also => sub {
            my ($t, $label) = @_;
            # dave exists, but in another realm
            check_unknown($t, $label, 'dave', 'udp');
        },
    },
);

for my $p (@providers) {
    my $label = $p->{name};
    my $t = server(%$p);
    check_register($t, $label, 'alice', $users{alice}, 'udp');
    check_register($t, $label, 'bob', $users{bob}, 'tcp');
    check_unknown($t, $label, 'mallory', 'udp');
    check_unknown($t, $label, 'trudy', 'tcp');
    $p->{also}->($t, $label) if $p->{also};
    check_proxy_invite($t, $label, 'alice', $users{alice}, 'udp');
    check_proxy_invite($t, $label, 'bob', $users{bob}, 'tcp') if $p->{name} eq 'dbd';
    $t->stop;
}

# ------------------------------------------------- a list: dbm, then file
{
    my $label = 'dbm file';
    my $t = server(
        modules => [ 'authn_file', 'authn_dbm' ],
        # AuthDBMType not set: APR's default DBM type, as httxt2dbm without -f
        location => [ 'SipAuthProvider dbm file', 'AuthDBMUserFile @DIR@/users.dbm',
                      'AuthUserFile @DIR@/users.htdigest' ],
        setup => sub {
            my $t = shift;
            write_dbm($t->dir . '/users.dbm', undef, alice => 'wonderland', carol => 'dbm-pw');
            write_htdigest($t->dir . '/users.htdigest', bob => 'builder', carol => 'file-pw');
        },
    );
    check_register($t, "$label: in dbm", 'alice', 'wonderland', 'udp');
    check_register($t, "$label: only in file", 'bob', 'builder', 'udp');
    check_register($t, "$label: in both, dbm first", 'carol', 'dbm-pw', 'tcp');
    my $ch = reg_challenge($t, 'carol', 'udp', $label);
    my $r = reg_auth($t, 'carol', 'file-pw', $ch, contacts => [ '<sip:carol@127.0.0.1:5977>' ], expires => 600);
    is(code($r), 401, "$label: carol with her password of the second provider -> 401 (the first one decides)");
    check_unknown($t, $label, 'mallory', 'udp');
    check_proxy_invite($t, $label, 'bob', 'builder', 'udp');
    $t->stop;
}

# ------------------------------------------------------ misconfigurations

# httpd -t on a configuration; (exit code, output)
sub config_test {
    my (@conf) = @_;
    my $t = SipRegTest->new(start => 0, server_conf => join("\n", @conf, ''));
    $t->write_conf;
    my ($rc, $out) = $t->_run_apache('-t');
    $t->cleanup_dir;
    return ($rc, $out);
}

{
    my ($rc, $out) = config_test(load('authn_core', 'authn_file'), '<Location "/">', 'SipAuth On',
                                 'SipAuthProvider dbm file', '</Location>');
    isnt($rc, 0, 'SipAuthProvider dbm without mod_authn_dbm: httpd refuses the configuration');
    like($out, qr/SipAuthProvider.*'dbm'.*not loaded/i, '... saying that the dbm provider is not loaded')
        or diag($out);

    ($rc, $out) = config_test(load('authn_core', 'authn_anon'), '<Location "/">', 'SipAuth On',
                              'SipAuthProvider anon', '</Location>');
    isnt($rc, 0, 'SipAuthProvider anon (no realm hashes): httpd refuses the configuration');
    like($out, qr/SipAuthProvider.*'anon'.*realm hashes/i, '... saying that anon has no realm hashes')
        or diag($out);

    # mod_authn_dbd without any of its queries would crash the engine (NULL
    # function) on the first authenticated request
    ($rc, $out) = config_test(load('authn_core', 'dbd', 'authn_dbd'), 'DBDriver sqlite3', 'DBDParams @DIR@/x.db',
                              '<Location "/">', 'SipAuth On', 'SipAuthProvider dbd', '</Location>');
    isnt($rc, 0, 'SipAuthProvider dbd without AuthDBDUserRealmQuery: httpd refuses the configuration');
    like($out, qr/SipAuthProvider dbd needs an AuthDBDUserRealmQuery/, '... saying that the query is missing')
        or diag($out);

    ($rc, $out) = config_test(load('authn_core', 'authn_file', 'authn_dbm'), '<Location "/">', 'SipAuth On',
                              'SipAuthProvider dbm file', '</Location>');
    is($rc, 0, 'the same with the modules loaded is accepted') or diag($out);
}

# Known only when a request comes: the default provider (file) is not
# loaded, or a provider fails (its DBM file is missing).  500, and the
# error log says why.
{
    my $t = SipRegTest->new(
        server_conf => join("\n",
            load('authn_core', 'authn_dbm'),
            '<Location "/">',
            '    SipAuth On',
            "    AuthName \"$realm\"",
            '</Location>',
            '<Location "/broken@127.0.0.1">',
            '    SipAuthProvider dbm',
            '    AuthDBMUserFile @DIR@/missing.dbm',
            '</Location>',
            ''),
    );
    for my $case ([ 'alice', qr/sip auth: authn provider 'file' is not loaded/, 'default provider file not loaded' ],
                  [ 'broken', qr/sip auth: authn provider 'dbm' failed/, 'provider dbm fails (DBM file missing)' ]) {
        my ($user, $re, $what) = @$case;
        my $ch = reg_challenge($t, $user, 'udp', $what);
        my $mark = $t->log_mark;
        my $r = reg_auth($t, $user, 'pw', $ch, contacts => [ "<sip:$user\@127.0.0.1:5966>" ], expires => 600);
        is(code($r), 500, "$what: REGISTER with credentials -> 500");
        ok($t->wait_log($mark, $re), "$what: the error log says why") or diag($t->log_since($mark));
    }
    my $r = $t->register(user => 'broken', contacts => [ '<sip:broken@127.0.0.1:5966>' ], expires => 600);
    is(code($r), 401, 'the server still answers afterwards');
    $t->stop;
}

done_testing;
