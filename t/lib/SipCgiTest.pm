package SipCgiTest;
# Helpers for the RFC 3050 (SIP-CGI) conformance tests t/cgi-*.t.
#
# A SipCgiTest is a SipTest (same private httpd + mod_sip) with:
#
#  * recording scripts: cgi_script($name, $body) installs /bin/sh script
#    $name in SipDirectory.  Every run first records its environment
#    (env -0), stdin, argc, cwd, user and start/end times under
#    @VAR@/rec/<name>/run.<n>/ (n = 1, 2, ... in start order; claimed with
#    mkdir, so concurrent runs never share a directory), then runs $body in
#    a subshell, whose stdout is the script's output.  $body sees $R (its
#    record directory) and can use the file $R/stdin (stdin is already
#    consumed).  runs($name, call_id => ...) reads the records back.
#
#  * peers: $t->peer(name => 'uas1') is a raw UDP endpoint on a free
#    loopback port (SipCgiTest::Peer) that can act as UAC or UAS with exact
#    control: it keeps every datagram it receives, expect() waits for one
#    that matches, reply() answers a received request.
#
#   my $t   = SipCgiTest->new;
#   my $uas = $t->peer(name => 'uas');
#   $t->cgi_script('p@127.0.0.1', "printf 'CGI-PROXY-REQUEST " . $uas->uri('b') . " SIP/2.0\\n\\n'");
#   my $uac = $t->peer(name => 'uac');
#   my $inv = $uac->invite(uri => $t->local_uri('p'));
#   my $fwd = $uas->expect(method => 'INVITE');
#   $uas->reply($fwd, 486);
#   my $fin = $uac->expect(call_id => $uac->call_id($inv), final => 1);
#   $uac->ack($inv, $fin);
#
# SipTest.pm itself is shared with other test files and is not changed here.

use strict;
use warnings;
use parent -norequire, 'SipTest';
use SipTest qw(parse_msg rand_token wait_until);
use Test::More;
use Time::HiRes qw(time sleep);
use File::Path ();

our @EXPORT_OK = qw(parse_msg rand_token wait_until sh_quote);
sub import {
    my $class = shift;
    my $caller = caller;
    no strict 'refs';
    for my $f (@_) {
        die "SipCgiTest does not export $f\n" unless grep { $_ eq $f } @EXPORT_OK;
        *{"${caller}::$f"} = \&{"SipCgiTest::$f"};
    }
}

# Single-quote a string for /bin/sh.
sub sh_quote {
    my ($s) = @_;
    $s =~ s/'/'\\''/g;
    return "'$s'";
}

# SIP_CGI_FCGI=1: every script runs through a resident FastCGI worker pool
# instead of being spawned by the engine (issue 18): t/fcgi/bridge.py runs
# the selected script for each request, so the same files test every
# trigger carried over FastCGI (t/cgi-*-fcgi.t set it and `do` the file).
sub fcgi_mode { return $ENV{SIP_CGI_FCGI} ? 1 : 0 }

sub new {
    my ($class, %o) = @_;
    if (fcgi_mode()) {
        my $bridge = SipTest->repo . '/t/fcgi/bridge.py';
        $o{vhost_conf} = "SipFastCGI $bridge 2 16\nSipFastCGIQueue 64\n"
                       . "SipFastCGIConnect * pool:$bridge\n" . ($o{vhost_conf} // '');
    }
    my $self = SipTest::new($class, %o);
    $self->{peers} = [];
    return $self;
}

sub local_uri {
    my ($self, $user, $params) = @_;
    return "sip:$user\@127.0.0.1:$self->{sip_port}" . ($params // '');
}

sub rec_tag { my ($name) = @_; (my $t = $name) =~ s/[^A-Za-z0-9_.-]/_/g; return $t }

sub rec_dir { my ($self, $name) = @_; return "$self->{var}/rec/" . rec_tag($name) }

# Install a recording script (see the header).  Options: mode.
sub cgi_script {
    my ($self, $name, $body, %o) = @_;
    my $tag = rec_tag($name);
    my $text = <<"SH";
#!/bin/sh
# recording SIP-CGI test script (t/lib/SipCgiTest.pm)
V=\@VAR\@/rec/$tag
mkdir -p "\$V" 2>/dev/null
i=1
while ! mkdir "\$V/run.\$i" 2>/dev/null; do i=\$((i+1)); done
R=\$V/run.\$i
date +%s.%N > "\$R/start"
echo \$# > "\$R/argc"
pwd -P > "\$R/cwd"
id -un > "\$R/user"
id -u > "\$R/uid"
/usr/bin/env -0 > "\$R/env"
cat > "\$R/stdin"
(
$body
)
rc=\$?
date +%s.%N > "\$R/end"
exit \$rc
SH
    # the end time is written after the body, but the body's output may
    # already have been acted on: tests use 'end' only as an upper bound
    return $self->write_script($name, text => $text, mode => $o{mode} // 0755);
}

sub _slurp {
    my ($f) = @_;
    open(my $fh, '<', $f) or return undef;
    binmode $fh;
    local $/;
    my $d = <$fh>;
    return $d // '';
}

# Records of the runs of script $name, in start order.  Each is a hash:
#   n, env (hashref), stdin, start, end (epoch s, undef while running),
#   argc, cwd, user, uid.  Options: call_id => only runs whose SIP_CALL_ID
#   is this, complete => 1 (only runs that wrote 'end').
sub runs {
    my ($self, $name, %o) = @_;
    my $d = $self->rec_dir($name);
    opendir(my $dh, $d) or return ();
    my @n = sort { $a <=> $b } map { /^run\.(\d+)$/ ? $1 : () } readdir $dh;
    closedir $dh;
    my @out;
    for my $n (@n) {
        my $r = "$d/run.$n";
        my $envraw = _slurp("$r/env");
        next unless defined $envraw && defined _slurp("$r/user");
        my %env;
        for my $kv (split /\0/, $envraw) {
            next unless $kv =~ /^([^=]*)=(.*)\z/s;
            $env{$1} = $2;
        }
        my %run = (n => $n, dir => $r, env => \%env, stdin => _slurp("$r/stdin"));
        for my $k (qw(start end argc cwd user uid)) {
            my $v = _slurp("$r/$k");
            $v =~ s/\s+\z// if defined $v;
            $run{$k} = $v;
        }
        next if defined $o{call_id} && ($env{SIP_CALL_ID} // '') ne $o{call_id};
        next if $o{complete} && !defined $run{end};
        push @out, \%run;
    }
    return @out;
}

# Wait until at least $n complete runs (matching %o) exist; returns them.
sub wait_runs {
    my ($self, $name, $n, %o) = @_;
    my $timeout = delete $o{timeout} // 5;
    my @r;
    wait_until($timeout, sub { @r = $self->runs($name, %o, complete => 1); @r >= $n }, 0.05);
    # let the server act on the output of the last run
    sleep($o{settle} // 0.2);
    return $self->runs($name, %o);
}

# Number of runs started so far (matching %o).
sub nruns { my ($self, $name, %o) = @_; return scalar(my @r = $self->runs($name, %o)) }

sub peer {
    my ($self, %o) = @_;
    my $p = SipCgiTest::Peer->new($self, %o);
    push @{ $self->{peers} }, $p;
    return $p;
}

# Error-log lines (since $mark) matching $re.
sub log_lines {
    my ($self, $mark, $re) = @_;
    return grep { /$re/ } split /\n/, $self->log_since($mark // 0);
}

# ---------------------------------------------------------------------------
package SipCgiTest::Peer;
# A raw UDP SIP endpoint on 127.0.0.1 (UAC or UAS) with exact control.

use strict;
use warnings;
use IO::Socket::INET;
use IO::Select;
use Socket qw(SOL_SOCKET SO_RCVBUF);
use Time::HiRes qw(time sleep);

my $DEBUG = $ENV{SIPTEST_DEBUG};

sub new {
    my ($class, $t, %o) = @_;
    # addr: another loopback address (127.0.0.2, ...) to send from
    my $s = IO::Socket::INET->new(LocalAddr => $o{addr} // '127.0.0.1', LocalPort => $o{port} // 0,
                                  Proto => 'udp') or die "peer socket: $!";
    setsockopt($s, SOL_SOCKET, SO_RCVBUF, 1 << 20);
    return bless { t => $t, sock => $s, name => $o{name} // 'peer', inbox => [], tags => {},
                   t0 => time }, $class;
}

sub name { $_[0]{name} }
sub port { $_[0]{sock}->sockport }
sub sock { $_[0]{sock} }

# A SIP URI that reaches this peer directly.
sub uri {
    my ($self, $user) = @_;
    return 'sip:' . ($user // $self->{name}) . '@127.0.0.1:' . $self->port;
}

sub contact { my ($self) = @_; return '<' . $self->uri . '>' }

# Send raw text to 127.0.0.1:$port (default: the server's SIP port).
sub send {
    my ($self, $raw, $port) = @_;
    $port //= $self->{t}->sip_port;
    print STDERR "--> [$self->{name}] to $port\n$raw\n" if $DEBUG;
    my $dst = Socket::pack_sockaddr_in($port, Socket::inet_aton('127.0.0.1'));
    defined(CORE::send($self->{sock}, $raw, 0, $dst)) or die "peer send: $!";
}

# Read datagrams for up to $timeout s (returns after the first batch).
sub _fill {
    my ($self, $timeout) = @_;
    my $sel = IO::Select->new($self->{sock});
    my $n = 0;
    while ($sel->can_read($n ? 0 : ($timeout < 0 ? 0 : $timeout))) {
        my $buf;
        my $from = recv($self->{sock}, $buf, 70000, 0);
        last unless defined $from;
        my ($port) = Socket::unpack_sockaddr_in($from);
        print STDERR "<-- [$self->{name}] from $port\n$buf\n" if $DEBUG;
        my $m = SipTest::parse_msg($buf);
        $m->{src_port} = $port;
        $m->{rtime} = time;
        push @{ $self->{inbox} }, { t => time, msg => $m, used => 0 };
        $n++;
    }
    return $n;
}

sub _match {
    my ($m, %c) = @_;
    return 0 if $m->{invalid};
    if (defined $c{method}) {
        return 0 if $m->is_response || uc($m->method) ne uc($c{method});
    }
    if (defined $c{code}) {
        return 0 unless $m->is_response;
        return 0 unless ref $c{code} ? (grep { $_ == $m->code } @{ $c{code} }) : $m->code == $c{code};
    }
    return 0 if $c{final} && !$m->is_final;
    return 0 if $c{response} && !$m->is_response;
    return 0 if $c{request} && $m->is_response;
    return 0 if defined $c{call_id} && ($m->header('call-id') // '') ne $c{call_id};
    return 0 if defined $c{cseq_method}
        && ($m->header('cseq') // '') !~ /\s\Q$c{cseq_method}\E\s*$/i;
    return 0 if $c{filter} && !$c{filter}->($m);
    return 1;
}

# Wait (timeout, default 5 s) for the first not yet expected message that
# matches: method, code (number or [list]), final, response, request,
# call_id, cseq_method, filter => sub { $msg }.  Returns it (and marks it
# as taken) or undef.
sub expect {
    my ($self, %c) = @_;
    my $timeout = delete $c{timeout} // 5;
    my $end = time + $timeout;
    while (1) {
        for my $e (@{ $self->{inbox} }) {
            next if $e->{used};
            if (_match($e->{msg}, %c)) {
                $e->{used} = 1;
                return $e->{msg};
            }
        }
        my $left = $end - time;
        return undef if $left <= 0;
        $self->_fill($left);
    }
}

# Read everything that arrives during $secs seconds (0: what is queued).
sub collect {
    my ($self, $secs) = @_;
    my $end = time + ($secs // 0);
    while (1) {
        my $left = $end - time;
        if ($left <= 0) { 1 while $self->_fill(0); last }
        $self->_fill($left);
    }
}

# All messages received so far (after reading what is queued; with
# wait => s, after listening that long) that match %c, taken or not.
sub all {
    my ($self, %c) = @_;
    $self->collect(delete $c{wait} // 0);
    return map { $_->{msg} } grep { _match($_->{msg}, %c) } @{ $self->{inbox} };
}

sub forget { $_[0]{inbox} = [] }

sub call_id { my ($self, $raw) = @_; return SipTest::parse_msg($raw)->header('call-id') }

# ---- UAS side

# Answer request $req (a received SipTest::Msg) with $code.  Options:
# reason, headers => [ name => value, ... ], body, content_type, tag
# (To tag; default one per Call-ID and branch), contact (default: ours on
# 1xx/2xx to INVITE; '' for none), no_tag => 1, no_rr => 1 (do not copy
# Record-Route into a 1xx/2xx).
my %REASON = (100 => 'Trying', 180 => 'Ringing', 181 => 'Call Is Being Forwarded', 183 => 'Session Progress',
              200 => 'OK', 202 => 'Accepted', 302 => 'Moved Temporarily', 404 => 'Not Found',
              408 => 'Request Timeout', 480 => 'Temporarily Unavailable', 486 => 'Busy Here',
              487 => 'Request Terminated', 500 => 'Server Internal Error', 503 => 'Service Unavailable',
              600 => 'Busy Everywhere', 603 => 'Decline');

sub reply {
    my ($self, $req, $code, %o) = @_;
    my $reason = $o{reason} // $REASON{$code} // 'Whatever';
    my $cid = $req->header('call-id') // '';
    my $branch = $req->header_param('via', 'branch') // '';
    my $tag = $o{tag} // ($self->{tags}{"$cid $branch"} //= SipTest::rand_token(10));
    my $to = $req->header('to') // '';
    $to .= ";tag=$tag" unless $code == 100 || $o{no_tag} || $to =~ /;\s*tag=/i;
    my @h;
    push @h, "Via: $_" for $req->headers('via');
    # RFC 3261 §12.1.1: dialog-creating responses copy the Record-Route
    if ($code > 100 && $code < 300 && !$o{no_rr}) {
        push @h, "Record-Route: $_" for $req->headers('record-route');
    }
    push @h, 'From: ' . ($req->header('from') // '');
    push @h, "To: $to";
    push @h, "Call-ID: $cid";
    push @h, 'CSeq: ' . ($req->header('cseq') // '');
    my $contact = $o{contact};
    $contact //= ($code > 100 && $code < 300 && uc($req->method) eq 'INVITE') ? $self->contact : '';
    push @h, "Contact: $contact" if length $contact;
    my @extra = @{ $o{headers} || [] };
    while (@extra) { my ($n, $v) = splice @extra, 0, 2; push @h, "$n: $v" }
    my $body = $o{body} // '';
    push @h, "Content-Type: $o{content_type}" if defined $o{content_type};
    push @h, 'Content-Length: ' . length($body);
    my $raw = "SIP/2.0 $code $reason\r\n" . join('', map { "$_\r\n" } @h) . "\r\n" . $body;
    # RFC 3261 §18.2.2: back to the sent-by port of the top Via (rport: the source)
    my ($top) = $req->header_elems('via');
    my ($vport) = ($top // '') =~ m{^SIP/2\.0/\w+\s+[^:;\s]+:(\d+)};
    $self->send($raw, $req->{src_port} // $vport);
    return SipTest::parse_msg($raw);
}

# ---- UAC side

# Send a request built by SipTest::sip_request (from this socket); returns
# the raw text.  Default method INVITE.
sub request {
    my ($self, %a) = @_;
    my $raw = $self->{t}->sip_request(method => 'INVITE', sock => $self->{sock}, %a);
    $self->send($raw);
    return $raw;
}

sub invite { my ($self, %a) = @_; return $self->request(method => 'INVITE', %a) }

# CANCEL for the INVITE $inv_raw (RFC 3261 §9.1).
sub cancel {
    my ($self, $inv_raw) = @_;
    my $inv = SipTest::parse_msg($inv_raw);
    my ($num) = ($inv->header('cseq') // '1') =~ /^(\d+)/;
    my ($via) = $inv->headers('via');
    my $raw = 'CANCEL ' . $inv->uri . " SIP/2.0\r\n"
        . "Via: $via\r\nMax-Forwards: 70\r\n"
        . 'From: ' . $inv->header('from') . "\r\nTo: " . $inv->header('to') . "\r\n"
        . 'Call-ID: ' . $inv->header('call-id') . "\r\nCSeq: $num CANCEL\r\nContent-Length: 0\r\n\r\n";
    $self->send($raw);
    return $raw;
}

# ACK for final response $resp to INVITE $inv_raw: hop by hop for non-2xx
# (same branch); for 2xx a new transaction to the Contact, through the
# Record-Route set (sent to the server).  Options: body, content_type,
# headers => [..].
sub ack {
    my ($self, $inv_raw, $resp, %o) = @_;
    my $raw;
    my $inv = SipTest::parse_msg($inv_raw);
    if ($resp->code >= 300) {
        $raw = $self->{t}->ack_for($inv_raw, $resp);
    } else {
        my ($num) = ($inv->header('cseq') // '1') =~ /^(\d+)/;
        my ($target) = ($resp->header('contact') // $inv->uri) =~ /<([^>]+)>/;
        $target //= $inv->uri;
        my @rr = $resp->header_elems('record-route');
        my $body = $o{body} // '';
        $raw = "ACK $target SIP/2.0\r\n"
            . 'Via: SIP/2.0/UDP 127.0.0.1:' . $self->port . ';branch=z9hG4bK' . SipTest::rand_token(16) . ";rport\r\n"
            . "Max-Forwards: 70\r\n"
            . join('', map { "Route: $_\r\n" } reverse @rr)
            . 'From: ' . $inv->header('from') . "\r\n"
            . 'To: ' . $resp->header('to') . "\r\n"
            . 'Call-ID: ' . $inv->header('call-id') . "\r\n"
            . "CSeq: $num ACK\r\n"
            . join('', map { "$_\r\n" } @{ $o{headers} || [] })
            . (defined $o{content_type} ? "Content-Type: $o{content_type}\r\n" : '')
            . 'Content-Length: ' . length($body) . "\r\n\r\n" . $body;
    }
    $self->send($raw);
    return $raw;
}

# The final response to the INVITE $inv_raw (waits up to $timeout s).
sub final_for {
    my ($self, $inv_raw, $timeout) = @_;
    return $self->expect(call_id => $self->call_id($inv_raw), cseq_method => 'INVITE',
                         final => 1, timeout => $timeout // 5);
}

1;
