package SipExplodeTest;
# Helpers for the URI-list service tests (issue 14, docs/explode.md):
# t/explode.t, t/explode-abuse.t, t/explode-sipp.t.
#
# A SipExplodeTest is a SipCgiTest (private httpd + mod_sip, recording
# SIP-CGI scripts, raw UDP peers) configured for the exploder:
#
#   my $t = SipExplodeTest->new(users => { alice => 'pw' },
#                               consent => "sip:*\@127.0.0.1:* *\n",
#                               vhost => ['SipExplodeMaxTargets 5']);
#
# * the main server loads mod_authn_core/file, mod_authz_user, mod_status
#   (/server-status), and has <Location "/"> with AuthName $REALM,
#   AuthUserFile @DIR@/users.htdigest and "SipExplode On" (explode => 0
#   leaves it out; location => [...] adds lines; sipauth => 1 adds
#   "SipAuth On"); the consent text goes to @DIR@/consent.txt and
#   "SipExplodeConsentFile" names it (consent => undef: no file);
#
# * builders: resource_lists(), sipfrag(), explode_body(),
#   explode_request() (an EXPLODE with list=cid:... in the Request-URI),
#   list_message() (RFC 5365 MESSAGE with Require: recipient-list-message);
#
# * send_auth(): sends a request built by a closure, answers the 401/407
#   with digest credentials (SipDigest) and returns the final response
#   (and every response, and when it arrived);
#
# * peers: $t->peer (UDP, SipCgiTest::Peer) and $t->tcp_peer (a listening
#   TCP socket, SipExplodeTest::TcpPeer, same interface); requests($peer)
#   lists the distinct requests a peer got (retransmissions folded),
#   serve() answers them (optionally after a delay);
#
# * counters(): the mod_sip lines of /server-status?auto as a hash.

use strict;
use warnings;
use parent -norequire, 'SipCgiTest';
use SipCgiTest ();
use SipTest qw(parse_msg rand_token wait_until);
use SipDigest qw(digest_challenge digest_credentials write_htdigest);
use Test::More;
use Time::HiRes qw(time sleep);
use IO::Socket::INET;
use IO::Select;

our $REALM = 'explode.test';
our @EXPORT_OK = qw(resource_lists sipfrag explode_body parse_msg rand_token wait_until
                    multipart_parts);
sub import {
    my $class = shift;
    my $caller = caller;
    no strict 'refs';
    for my $f (@_) {
        die "SipExplodeTest does not export $f\n" unless grep { $_ eq $f } @EXPORT_OK;
        *{"${caller}::$f"} = \&{"SipExplodeTest::$f"};
    }
}

# Options: users ({ name => password }, default alice/bob/carol), explode
# (default 1), sipauth, location => [...] (in <Location "/">), conf =>
# [...] (main server, before it), after => [...] (main server, after it),
# vhost => [...] (inside the SIP <VirtualHost>), consent (text; default:
# everybody at 127.0.0.1 accepts anyone), consent_local, scripts, start.
sub new {
    my ($class, %o) = @_;
    my $M = $SipTest::MODDIR;
    my %users = %{ $o{users} || { alice => 'wonderland', bob => 'builder', carol => 'singer' } };
    my $consent = exists $o{consent} ? $o{consent} : "sip:*\@127.0.0.1 *\nsip:*\@localhost *\n";
    my @server = (
        "LoadModule authn_core_module $M/mod_authn_core.so",
        "LoadModule authn_file_module $M/mod_authn_file.so",
        "LoadModule authz_user_module $M/mod_authz_user.so",
        "LoadModule status_module $M/mod_status.so",
        '<Location /server-status>', '    SetHandler server-status', '</Location>',
        @{ $o{conf} || [] },
        '<Location "/">',
        ($o{sipauth} ? ('    SipAuth On') : ()),
        "    AuthName \"$REALM\"",
        '    AuthUserFile @DIR@/users.htdigest',
        (($o{explode} // 1) ? ('    SipExplode On') : ()),
        (map { "    $_" } @{ $o{location} || [] }),
        '</Location>',
        @{ $o{after} || [] }, '');
    my @vhost = (
        (defined $consent ? ('SipExplodeConsentFile @DIR@/consent.txt') : ()),
        # one user explodes dozens of times a minute here: the rate limit
        # has its own tests (explode-abuse.t, explode-engine.t)
        ((grep { /^SipExplodeRate\b/ } @{ $o{vhost} || [] }) ? () : ('SipExplodeRate 1000')),
        @{ $o{vhost} || [] });
    my $self = SipCgiTest::new($class,
        server_conf => join("\n", @server),
        vhost_conf  => join("\n", @vhost),
        scripts     => $o{scripts} // {},
        (exists $o{start} ? (start => $o{start}) : ()),
        setup => sub {
            my $t = shift;
            write_htdigest($t->dir . '/users.htdigest', $REALM, %users);
            if (defined $consent) {
                open(my $fh, '>', $t->dir . '/consent.txt') or die "consent.txt: $!";
                print $fh $t->subst($consent);
                close $fh;
                chmod 0644, $t->dir . '/consent.txt';
            }
        });
    $self->{users} = \%users;
    return $self;
}

sub users { $_[0]{users} }

# The exploder's address (Request-URI without list=).
sub exploder_uri {
    my ($self, $user) = @_;
    return 'sip:' . ($user // 'exploder') . '@127.0.0.1:' . $self->sip_port;
}

# ------------------------------------------------------------- bodies

# An application/resource-lists+xml document (RFC 4826).  entries: URIs
# or { uri, copy (to|cc|bcc), anonymize, display, attrs => 'raw' }, or
# { raw => 'xml' } (written as is, e.g. a nested <list> or <entry-ref>).
# ns => 0: no default namespace (the draft's example); cc_ns => 0: no
# copycontrol namespace declaration (prefix still used when copy is set).
sub resource_lists {
    my (%o) = @_;
    my $ns = ($o{ns} // 1) ? ' xmlns="urn:ietf:params:xml:ns:resource-lists"' : '';
    my $cc = ($o{cc_ns} // 1) ? ' xmlns:cp="urn:ietf:params:xml:ns:copycontrol"' : '';
    my $x = qq{<?xml version="1.0" encoding="UTF-8"?>\n<resource-lists$ns$cc>\n<list>\n};
    for my $e (@{ $o{entries} || [] }) {
        if (ref $e && defined $e->{raw}) { $x .= "  $e->{raw}\n"; next }
        my %e = ref $e ? %$e : (uri => $e);
        my $a = '';
        $a .= qq{ cp:copyControl="$e{copy}"} if defined $e{copy};
        $a .= qq{ cp:anonymize="$e{anonymize}"} if defined $e{anonymize};
        $a .= " $e{attrs}" if defined $e{attrs};
        my $uri = xml_escape($e{uri});
        if (defined $e{display}) {
            $x .= qq{  <entry uri="$uri"$a><display-name>} . xml_escape($e{display})
                . qq{</display-name></entry>\n};
        } else {
            $x .= qq{  <entry uri="$uri"$a/>\n};
        }
    }
    return $x . "</list>\n</resource-lists>\n";
}

sub xml_escape {
    my ($s) = @_;
    $s =~ s/&/&amp;/g; $s =~ s/</&lt;/g; $s =~ s/>/&gt;/g; $s =~ s/"/&quot;/g;
    return $s;
}

# A message/sipfrag request template (RFC 3420): request line, headers,
# blank line, body.  Options: method (MESSAGE), uri (sip:anyone.invalid),
# headers => [ name => value ... ], body ("Hi all."), content_type
# (text/plain), content_length (override), no_start_line, status_line.
sub sipfrag {
    my (%o) = @_;
    my $body = $o{body} // 'Hi all.';
    my $f = '';
    if ($o{status_line}) { $f .= "$o{status_line}\r\n" }
    elsif (!$o{no_start_line}) {
        $f .= ($o{method} // 'MESSAGE') . ' ' . ($o{uri} // 'sip:anyone.invalid') . " SIP/2.0\r\n";
    }
    my @h = @{ $o{headers} || [] };
    while (@h) { my ($n, $v) = splice @h, 0, 2; $f .= "$n: $v\r\n" }
    $f .= 'Content-Type: ' . ($o{content_type} // 'text/plain') . "\r\n" if length $body;
    $f .= 'Content-Length: ' . ($o{content_length} // length $body) . "\r\n";
    return $f . "\r\n" . $body;
}

# A multipart/mixed body of parts { type, body, headers => [n => v ...] }.
# Returns (content type, body).
sub multipart {
    my ($parts, %o) = @_;
    my $b = $o{boundary} // 'exb-' . rand_token(12);
    my $out = '';
    for my $p (@$parts) {
        $out .= "--$b\r\n";
        my @h = @{ $p->{headers} || [] };
        $out .= "Content-Type: $p->{type}\r\n" if defined $p->{type};
        while (@h) { my ($n, $v) = splice @h, 0, 2; $out .= "$n: $v\r\n" }
        $out .= "\r\n$p->{body}\r\n";
    }
    $out .= "--$b--\r\n";
    return ("multipart/mixed;boundary=\"$b\"", $out);
}

# The body of an EXPLODE: a template part (Content-Disposition: template,
# message/sipfrag) and a list part (application/resource-lists+xml,
# Content-ID <cid>).  Options: template (text; undef with no_template),
# list (XML), cid, order ('template' first or 'list' first), list_type,
# template_type, no_template, no_cid, extra_parts => [...], boundary.
sub explode_body {
    my (%o) = @_;
    my @tpl = $o{no_template} ? () : ({
        type => $o{template_type} // 'message/sipfrag',
        headers => [ 'Content-Disposition' => $o{template_disposition} // 'template' ],
        body => $o{template} // sipfrag() });
    my @lst = ({ type => $o{list_type} // 'application/resource-lists+xml',
                 headers => [ ($o{no_cid} ? () : ('Content-ID' => '<' . ($o{cid} // 'lst1@client.example.org') . '>')),
                              @{ $o{list_headers} || [] } ],
                 body => $o{list} // resource_lists(entries => []) });
    my @parts = ($o{order} // 'template') eq 'list' ? (@lst, @tpl) : (@tpl, @lst);
    push @parts, @{ $o{extra_parts} || [] };
    return multipart(\@parts, boundary => $o{boundary});
}

# Split a multipart body: list of { type, headers (lc name => value), body }.
sub multipart_parts {
    my ($ctype, $body) = @_;
    my ($b) = ($ctype // '') =~ /boundary="?([^";]+)"?/i or return ();
    my @out;
    for my $chunk (split /\r?\n?--\Q$b\E(?:--)?[ \t]*\r?\n?/, $body) {
        next unless $chunk =~ /\S/;
        my ($h, $content) = $chunk =~ /^(.*?)\r?\n\r?\n(.*)\z/s or next;
        my %h;
        for my $l (split /\r?\n/, $h) { $h{ lc $1 } = $2 if $l =~ /^([^:]+):\s*(.*?)\s*$/ }
        push @out, { type => $h{'content-type'}, headers => \%h, body => $content };
    }
    return @out;
}

# ------------------------------------------------------------- requests

# An EXPLODE request (raw text).  Options: user (From user, alice), uri
# (the exploder, default exploder_uri), cid, escape (write list=cid: with
# %40), list_param (the whole value after list=; '' = no list= at all),
# body options (explode_body) or body + content_type, transport, sock,
# call_id, cseq, headers => [...], from.
sub explode_request {
    my ($self, %o) = @_;
    my $cid = $o{cid} // 'lst1@client.example.org';
    my $lp = $o{list_param};
    unless (defined $lp) {
        ($lp = "cid:$cid") =~ s/\@/%40/g if $o{escape};
        $lp //= "cid:$cid";
    }
    my $uri = ($o{uri} // $self->exploder_uri) . (length $lp ? ";list=$lp" : '');
    my ($ct, $body);
    if (exists $o{body}) { ($ct, $body) = ($o{content_type}, $o{body}) }
    else { ($ct, $body) = explode_body(%o, cid => $cid) }
    return $self->sip_request(
        method => 'EXPLODE', uri => $uri, transport => $o{transport} // 'UDP',
        sock => $o{sock}, call_id => $o{call_id}, cseq => $o{cseq},
        from => $o{from} // $self->user_from($o{user} // 'alice'),
        to => $o{to} // '<' . ($o{uri} // $self->exploder_uri) . '>',
        content_type => $ct, body => $body,
        headers => [ 'Contact' => '<sip:' . ($o{user} // 'alice') . '@127.0.0.1:'
                                  . ($o{sock} ? $o{sock}->sockport : 5060) . '>',
                     @{ $o{headers} || [] } ]);
}

sub user_from {
    my ($self, $user, $tag) = @_;
    return "\"\u$user\" <sip:$user\@127.0.0.1:" . $self->sip_port . '>;tag=' . ($tag // rand_token(8));
}

# A MESSAGE for RFC 5365 (raw): text/plain + a recipient-list part.
# Options: list (XML), text ("Hi all."), uri (default exploder_uri
# 'list-service'), require (default recipient-list-message; '' none),
# extra_parts, user, transport, sock, headers, call_id, cseq.
sub list_message {
    my ($self, %o) = @_;
    my ($ct, $body) = multipart([
        { type => 'text/plain', body => $o{text} // 'Hi all.' },
        { type => 'application/resource-lists+xml',
          headers => [ 'Content-Disposition' => 'recipient-list' ],
          body => $o{list} // resource_lists(entries => []) },
        @{ $o{extra_parts} || [] } ]);
    my $req = $o{require} // 'recipient-list-message';
    my $uri = $o{uri} // $self->exploder_uri('list-service');
    return $self->sip_request(
        method => 'MESSAGE', uri => $uri, transport => $o{transport} // 'UDP',
        sock => $o{sock}, call_id => $o{call_id}, cseq => $o{cseq},
        from => $self->user_from($o{user} // 'alice'), to => "<$uri>",
        content_type => $ct, body => $body,
        headers => [ (length $req ? ('Require' => $req) : ()), @{ $o{headers} || [] } ]);
}

# ------------------------------------------------------------- sending

# Send the request $build->(%extra) returns (extra: cseq, headers =>
# [...]) over 'udp' or 'tcp', answer a 401/407 with digest credentials of
# user/password (the same Call-ID, CSeq + 1), and return a hash:
#   final (SipTest::Msg), t_final (when it arrived), all (every response),
#   challenged (1 when a challenge came first), sent (the last raw request).
# Options: transport, user, password (default: the user's), no_auth (do
# not answer the challenge), timeout, sock (UDP socket or TCP connection).
sub send_auth {
    my ($self, $build, %o) = @_;
    my $tr = lc($o{transport} // 'udp');
    my $sock = $o{sock} // ($tr eq 'tcp' ? $self->tcp_connect : $self->udp_socket)
        or die "send_auth: no socket: $!";
    my $timeout = $o{timeout} // 5;
    my %res = (all => [], challenged => 0, sock => $sock);
    my $raw = $build->(sock => $sock, transport => uc $tr, cseq => 1);
    my $first = $self->_exchange($tr, $sock, $raw, $timeout, \%res);
    my $fin = $first;
    if ($fin && ($fin->code == 401 || $fin->code == 407) && !$o{no_auth}) {
        $res{challenged} = 1;
        my $hdr = $fin->code == 401 ? 'www-authenticate' : 'proxy-authenticate';
        my $c = digest_challenge($fin, $hdr);
        my $req = parse_msg($raw);
        my $user = $o{user} // 'alice';
        my $cred = digest_credentials(challenge => $c, user => $user,
                                      password => $o{password} // $self->{users}{$user} // 'x',
                                      method => $req->method, uri => $req->uri);
        my $callid = $req->header('call-id');
        $raw = $build->(sock => $sock, transport => uc $tr, cseq => 2, call_id => $callid,
                        from => $req->header('from'),
                        auth => [ ($fin->code == 401 ? 'Authorization' : 'Proxy-Authorization') => $cred ]);
        $fin = $self->_exchange($tr, $sock, $raw, $timeout, \%res);
    }
    $res{final} = $fin;
    $res{sent} = $raw;
    return \%res;
}

sub _exchange {
    my ($self, $tr, $sock, $raw, $timeout, $res) = @_;
    my @r = $tr eq 'tcp' ? do { $self->send_raw($sock, $raw); $self->read_until_final($sock, $timeout) }
                         : $self->udp_req($raw, $timeout, sock => $sock);
    push @{ $res->{all} }, @r;
    my ($f) = grep { $_->is_response && $_->code >= 200 } @r;
    $res->{t_final} = time if $f;
    return $f;
}

# send_auth for explode_request(%b) / list_message(%b): (result hash).
sub explode {
    my ($self, %o) = @_;
    my %b = %{ delete $o{build} || {} };
    my $kind = delete $o{kind} // 'explode';
    my $build = sub {
        my (%x) = @_;
        my %a = (%b, sock => $x{sock}, transport => $x{transport}, cseq => $x{cseq});
        $a{call_id} = $x{call_id} if $x{call_id};
        $a{headers} = [ @{ $x{auth} || [] }, @{ $b{headers} || [] } ];
        my $raw = $kind eq 'message' ? $self->list_message(%a) : $self->explode_request(%a);
        # the retry keeps the From (and its tag) of the first request
        $raw =~ s/^From: [^\r\n]*/From: $x{from}/m if $x{from};
        return $raw;
    };
    return $self->send_auth($build, %o, user => $b{user} // $o{user} // 'alice');
}

# ------------------------------------------------------------- peers

sub tcp_peer {
    my ($self, %o) = @_;
    my $p = SipExplodeTest::TcpPeer->new($self, %o);
    push @{ $self->{peers} }, $p;
    return $p;
}

# A UDP or TCP peer by transport name.
sub peer_for {
    my ($self, $tr, %o) = @_;
    return lc $tr eq 'tcp' ? $self->tcp_peer(%o) : $self->peer(%o);
}

# The distinct requests $peer has received (after listening 'wait' s):
# retransmissions (same Call-ID, CSeq and Via branch) folded into one.
sub requests {
    my ($self, $peer, %o) = @_;
    my %seen;
    my @r;
    for my $m ($peer->all(wait => $o{wait} // 0, request => 1)) {
        my $k = join '|', $m->header('call-id') // '', $m->header('cseq') // '',
                          $m->header_param('via', 'branch') // '';
        push @r, $m unless $seen{$k}++;
    }
    return @r;
}

# Answer every request the peers got during $secs seconds with 'code'
# (200), each first seen request after 'delay' seconds; retransmissions
# get the same answer again.  Returns the time of the first answer.
sub serve {
    my ($self, $peers, %o) = @_;
    my $end = time + ($o{secs} // 2);
    my $delay = $o{delay} // 0;
    my $code = $o{code} // 200;
    my $first;
    my %state;    # "peer key" => { t (first seen), answered }
    while (time < $end) {
        for my $p (@$peers) {
            $p->collect(0);
            for my $e (@{ $p->{inbox} }) {
                my $m = $e->{msg};
                next if $m->is_response || $m->{invalid};
                next if uc($m->method) eq 'ACK';
                my $k = "$p " . join '|', $m->header('call-id') // '', $m->header('cseq') // '';
                my $s = $state{$k} //= { t => $e->{t} };
                next if $e->{served};
                if (time - $s->{t} >= $delay) {
                    my $c = ref $code eq 'CODE' ? $code->($p, $m) : $code;
                    $p->reply($m, $c);
                    $first //= time;
                    $e->{served} = 1;
                }
            }
        }
        sleep 0.02;
    }
    return $first;
}

# ------------------------------------------------------------- status

# The mod_sip counters of /server-status?auto: { SipExplosions => n, ... }
sub counters {
    my ($self) = @_;
    return $self->sip_counters;
}

# ---------------------------------------------------------------------------
package SipExplodeTest::TcpPeer;
# A SIP endpoint on a listening TCP socket of 127.0.0.1: accepts the
# server's connections, reads messages framed by Content-Length, keeps
# every one (expect, all, collect, forget as SipCgiTest::Peer) and answers
# on the connection the request came on.

use strict;
use warnings;
use IO::Socket::INET;
use IO::Select;
use Time::HiRes qw(time sleep);

my $DEBUG = $ENV{SIPTEST_DEBUG};

sub new {
    my ($class, $t, %o) = @_;
    my $l = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => $o{port} // 0,
                                  Proto => 'tcp', Listen => 64, ReuseAddr => 1)
        or die "tcp peer: $!";
    return bless { t => $t, listen => $l, name => $o{name} // 'peer', inbox => [], conns => [],
                   tags => {}, accepted => 0 }, $class;
}

sub name { $_[0]{name} }
sub port { $_[0]{listen}->sockport }
sub accepted { $_[0]{accepted} }

sub uri {
    my ($self, $user) = @_;
    return 'sip:' . ($user // $self->{name}) . '@127.0.0.1:' . $self->port . ';transport=tcp';
}

sub contact { my ($self) = @_; return '<' . $self->uri . '>' }

sub _fill {
    my ($self, $timeout) = @_;
    my $sel = IO::Select->new($self->{listen}, map { $_->{sock} } grep { !$_->{eof} } @{ $self->{conns} });
    my $n = 0;
    my @ready = $sel->can_read($timeout < 0 ? 0 : $timeout);
    for my $s (@ready) {
        if ($s == $self->{listen}) {
            my $c = $self->{listen}->accept or next;
            $c->autoflush(1);
            $self->{accepted}++;
            push @{ $self->{conns} }, { sock => $c, buf => '' };
            next;
        }
        my ($conn) = grep { $_->{sock} == $s } @{ $self->{conns} };
        my $r = sysread($s, my $buf, 65536);
        if (!$r) { $conn->{eof} = 1; next }
        $conn->{buf} .= $buf;
        while (1) {
            $conn->{buf} =~ s/^(?:\r\n)+//;
            last unless $conn->{buf} =~ /\r?\n\r?\n/;
            my $hlen = $+[0];
            my $head = substr($conn->{buf}, 0, $hlen);
            my $cl = $head =~ /^(?:content-length|l)[ \t]*:[ \t]*(\d+)/mi ? $1 : 0;
            last if length($conn->{buf}) < $hlen + $cl;
            my $raw = substr($conn->{buf}, 0, $hlen + $cl, '');
            print STDERR "<-- [$self->{name} TCP]\n$raw\n" if $DEBUG;
            my $m = SipTest::parse_msg($raw);
            $m->{conn} = $conn;
            $m->{rtime} = time;
            push @{ $self->{inbox} }, { t => time, msg => $m, used => 0 };
            $n++;
        }
    }
    return $n || scalar(@ready);
}

sub expect   { my $s = shift; return SipCgiTest::Peer::expect($s, @_) }
sub collect  { my $s = shift; return SipCgiTest::Peer::collect($s, @_) }
sub all      { my $s = shift; return SipCgiTest::Peer::all($s, @_) }
sub forget   { $_[0]{inbox} = [] }

# Answer $req on the connection it came on (options as SipCgiTest::Peer::reply).
sub reply {
    my ($self, $req, $code, %o) = @_;
    local $self->{cur_conn} = $req->{conn};
    return SipCgiTest::Peer::reply($self, $req, $code, %o);
}

sub send {
    my ($self, $raw) = @_;
    my $conn = $self->{cur_conn};
    print STDERR "--> [$self->{name} TCP]\n$raw\n" if $DEBUG;
    local $SIG{PIPE} = 'IGNORE';
    syswrite($conn->{sock}, $raw) if $conn && !$conn->{eof};
}

1;
