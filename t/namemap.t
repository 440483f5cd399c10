#!/usr/bin/perl
# Name mapping (seed 002 §5.2, issue 15 item 2): SipNameMap file, dbm and
# program.  A UDP peer registers as jqp; requests dialled to any of the
# seed's names for John Q. Public reach it, over UDP and TCP; an unknown
# name is handled as before; two people named John give 300 (or 404 with
# SipNameMapMultiple 404).  The program mapper is started once, its answers
# are cached, one that sleeps does not hold the engine up, one that exits
# is started again.
use strict;
use warnings;
use Test::More;
use IO::Socket::INET;
use Time::HiRes qw(time sleep);
use SipTest qw(parse_msg rand_token wait_until);
use SipRegTest;

my @seed = qw(jqp John Public J.Q.Public John.Q.Public John_Public JohnPublic JPublic
              JohnQPublic);
my $NAMES = "# the subscribers (seed 002 §5.2)\njqp John Q. Public\njdoe John Doe\n";

# jdoe has a script of his own: mapped requests run the canonical user's
my %SCRIPTS = ('jdoe@127.0.0.1' => "#!/bin/sh\nprintf 'SIP/2.0 200 OK\\r\\nX-Script: jdoe\\r\\n\\r\\n'\n");

my $peer = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0, Proto => 'udp')
    or die $!;
my $pport = $peer->sockport;

# A response to the raw request $raw (486 for INVITE, 200 otherwise).
sub answer_for {
    my ($raw) = @_;
    my $code = $raw =~ /^INVITE / ? '486 Busy Here' : '200 OK';
    my @v = ($raw =~ /^(Via:[^\r\n]*)/mig);
    my ($f) = $raw =~ /^(From:[^\r\n]*)/mi;
    my ($to) = $raw =~ /^(To:[^\r\n]*)/mi;
    my ($c) = $raw =~ /^(Call-ID:[^\r\n]*)/mi;
    my ($cs) = $raw =~ /^(CSeq:[^\r\n]*)/mi;
    return join("\r\n", "SIP/2.0 $code", @v, $f, "$to;tag=peer1", $c, $cs, 'Content-Length: 0',
                '', '');
}

# Dial $o{name} with $o{method} (INVITE) over $o{transport} (udp).  When the
# peer gets the request it answers it.  Returns (final response, request
# the peer got or undef).
my $calls = 0;

sub call {
    my ($t, %o) = @_;
    $calls++;
    my $method = $o{method} // 'INVITE';
    my $tr = $o{transport} // 'udp';
    my $uri = "sip:$o{name}\@127.0.0.1:" . $t->sip_port;
    my $cid = rand_token(12) . '@namemap.t';
    my ($cs, $raw);
    if ($tr eq 'udp') {
        $cs = $t->udp_socket;
        $raw = $t->sip_request(method => $method, uri => $uri, sock => $cs, call_id => $cid,
                               headers => [ Contact => '<sip:caller@127.0.0.1:' . $cs->sockport . '>' ]);
        $t->udp_send($raw, sock => $cs);
    } else {
        $cs = $t->tcp_connect or return;
        $raw = $t->sip_request(method => $method, uri => $uri, transport => 'TCP', sock => $cs,
                               call_id => $cid,
                               headers => [ Contact => '<sip:caller@127.0.0.1:' . $cs->sockport . ';transport=tcp>' ]);
        $t->send_raw($cs, $raw);
    }
    my ($got, $final);
    my $end = time + ($o{timeout} // 6);
    while (!$final && time < $end) {
        # the peer first: the proxy waits for its answer
        while (defined(my $d = $t->udp_recv($peer, 0.05))) {
            my $m = parse_msg($d);
            next if $m->is_response || ($m->header('call-id') // '') ne $cid;
            next unless $m->method eq $method;
            $got //= $m;
            $t->udp_send(answer_for($d), sock => $peer);
        }
        if ($tr eq 'udp') {
            while (defined(my $d = $t->udp_recv($cs, 0.05))) {
                my $m = parse_msg($d);
                next unless $m->is_response && ($m->header('call-id') // '') eq $cid;
                if ($m->code >= 200) { $final = $m; last }
            }
        } else {
            my $m = $t->read_response($cs, 0.05);
            $final = $m if $m && $m->is_response && $m->code >= 200;
        }
    }
    if ($final && $method eq 'INVITE') {
        my $ack = $t->ack_for($raw, $final);
        $tr eq 'udp' ? $t->udp_send($ack, sock => $cs) : $t->send_raw($cs, $ack);
    }
    return ($final, $got);
}

sub code_of { my $r = shift; return $r ? $r->code : 'none' }

# Everything a name map must do, on server $t whose map has the seed's
# John Q. Public (jqp) and John Doe (jdoe).
sub common_checks {
    my ($t, $label) = @_;
    my $port = $t->sip_port;
    my $r = $t->register(user => 'jqp', contacts => [ "<sip:jqp\@127.0.0.1:$pport>" ],
                         expires => 600);
    is(code_of($r), 200, "$label: jqp registered");

    for my $tr (qw(udp tcp)) {
        my ($f, $got) = call($t, name => 'John.Q.Public', transport => $tr);
        ok($got, "$label: INVITE sip:John.Q.Public over \U$tr\E reaches jqp's phone");
        is($got && $got->uri, "sip:jqp\@127.0.0.1:$pport", "$label: ... at jqp's contact");
        like($got ? $got->header('to') : '', qr/John\.Q\.Public/,
             "$label: ... To as the caller wrote it");
        is(code_of($f), 486, "$label: ... and its answer comes back over \U$tr\E");
    }
    for my $n (@seed, 'JOHN.q.PUBLIC', 'john.public') {
        next if $n eq 'John';       # two people answer to it: below
        my ($f, $got) = call($t, name => $n, method => 'MESSAGE');
        ok($got && code_of($f) == 200, "$label: MESSAGE to $n reaches jqp (" . code_of($f) . ")");
    }
    my ($f, $got) = call($t, name => 'John%2EQ%2ePublic', method => 'MESSAGE');
    ok($got && code_of($f) == 200, "$label: %-encoded John%2EQ%2ePublic reaches jqp");
    ($f, $got) = call($t, name => '%4aPublic', method => 'MESSAGE');
    ok($got && code_of($f) == 200, "$label: %4aPublic reaches jqp");

    ($f, $got) = call($t, name => 'Nobody.Here', timeout => 4);
    like(code_of($f), qr/^(404|480)$/, "$label: an unknown name is handled as before ("
         . code_of($f) . ')');
    ok(!$got, "$label: ... and reaches nobody");

    ($f, $got) = call($t, name => 'John', timeout => 4);
    is(code_of($f), 300, "$label: John (two people) -> 300 Multiple Choices");
    my @c = sort map { $_->{uri} } SipRegTest::contacts_of($f);
    is_deeply(\@c, [ "sip:jdoe\@127.0.0.1:$port", "sip:jqp\@127.0.0.1:$port" ],
              "$label: ... with a Contact for each") or diag(explain(\@c));
    ok(!$got, "$label: ... and rings nobody");

    ($f, $got) = call($t, name => 'John.Doe', method => 'MESSAGE', timeout => 4);
    is($f && $f->header('x-script'), 'jdoe',
       "$label: John.Doe runs the script of jdoe (SipDirectory's jdoe\@127.0.0.1)");
}

sub graceful {
    my ($t, $vhost) = @_;
    my $old = $t->engine_pid // 0;
    $t->{vhost_conf} = $vhost;
    $t->write_conf;
    ok($t->apachectl('graceful'), 'apachectl graceful');
    ok(wait_until(15, sub { my $p = $t->engine_pid; $p && $p != $old && $t->options_ok }, 0.2),
       '... a new engine serves');
}

# ---------------------------------------------------------------- file
{
    my $t = SipRegTest->new(
        scripts => \%SCRIPTS,
        setup => sub {
            my $s = shift;
            open(my $fh, '>', $s->dir . '/names') or die $!;
            print $fh $NAMES;
            close $fh;
        },
        vhost_conf => "SipNameMap file names");
    common_checks($t, 'file');

    # REGISTER is never mapped: JPublic's binding is JPublic's own
    my $r = $t->register(user => 'JPublic', contacts => [ '<sip:other@127.0.0.1:9>' ],
                         expires => 600);
    my ($r2, %b) = $t->fetch('jqp');
    ok(!exists $b{'sip:other@127.0.0.1:9'}, 'file: REGISTER to JPublic binds JPublic, not jqp');

    # graceful reads the file again
    open(my $fh, '>>', $t->dir . '/names') or die $!;
    print $fh "mm Mary Public\n";
    close $fh;
    graceful($t, "SipNameMap file names");
    my ($f) = call($t, name => 'Public', timeout => 4);
    my @c = sort map { $_->{uri} } SipRegTest::contacts_of($f);
    is_deeply(\@c, [ 'sip:jqp@127.0.0.1:' . $t->sip_port, 'sip:mm@127.0.0.1:' . $t->sip_port ],
              'file: after graceful, Public is Mary Public too (300)') or diag(explain(\@c));

    graceful($t, "SipNameMap file names\nSipNameMapMultiple 404");
    ($f) = call($t, name => 'John', timeout => 4);
    is(code_of($f), 404, 'file: SipNameMapMultiple 404: John -> 404');

    # apachectl -t names a bad line
    open($fh, '>>', $t->dir . '/names') or die $!;
    print $fh "lonely\n";
    close $fh;
    my ($rc, $out) = $t->_run_apache('-t');
    ok($rc != 0, 'file: a bad line is refused by apachectl -t');
    like($out, qr{names:5: expected "user First \[Middle\] Last"}, '... naming its file and line');
    open($fh, '>', $t->dir . '/names') or die $!;
    print $fh $NAMES;
    close $fh;
    $t->stop;
}

# ---------------------------------------------------------------- dbm
{
    require SDBM_File;      # part of Perl itself
    require Fcntl;
    my $t = SipRegTest->new(
        scripts => \%SCRIPTS,
        setup => sub {
            my $s = shift;
            my %h;
            tie(%h, 'SDBM_File', $s->dir . '/names', Fcntl::O_RDWR() | Fcntl::O_CREAT(), 0644)
                or die "SDBM: $!";
            for my $n (@seed, 'john.public') {
                $h{ lc $n } = 'jqp';
            }
            $h{john} = 'jqp jdoe';
            $h{'john.doe'} = 'jdoe';
            untie %h;
        },
        vhost_conf => "SipNameMap dbm sdbm:names");
    common_checks($t, 'dbm');

    # a map made by httxt2dbm (one word per name: several users with commas)
    my $txt = $t->dir . '/names.txt';
    open(my $fh, '>', $txt) or die $!;
    print $fh "john.q.public jqp\njohn jqp,jdoe\n";
    close $fh;
    system('httxt2dbm', '-f', 'SDBM', '-i', $txt, '-o', $t->dir . '/names2') == 0
        or die "httxt2dbm failed";
    graceful($t, "SipNameMap dbm sdbm:names2");
    my ($f, $got) = call($t, name => 'John.Q.Public', method => 'MESSAGE');
    ok($got && code_of($f) == 200, 'dbm (httxt2dbm): John.Q.Public reaches jqp');
    ($f) = call($t, name => 'John', timeout => 4);
    is(scalar(SipRegTest::contacts_of($f)), 2, 'dbm (httxt2dbm): John -> 300 with two Contacts');
    $t->stop;
}

# ---------------------------------------------------------------- dbd
{
    my $MODDIR = '/usr/lib/apache2/modules';
    my $t = SipRegTest->new(
        scripts => \%SCRIPTS,
        setup => sub {
            my $s = shift;
            my $db = $s->dir . '/names.db';
            my $sql = "CREATE TABLE namemap (name TEXT, users TEXT);\n";
            for my $n (@seed, 'john.public') {
                next if lc $n eq 'john';
                $sql .= "INSERT INTO namemap VALUES ('" . lc($n) . "', 'jqp');\n";
            }
            # several rows, or several users in one, are all candidates
            $sql .= "INSERT INTO namemap VALUES ('john', 'jqp');\n"
                  . "INSERT INTO namemap VALUES ('john', 'jdoe');\n"
                  . "INSERT INTO namemap VALUES ('john.doe', 'jdoe');\n";
            open(my $fh, '|-', 'sqlite3', $db) or die "sqlite3: $!";
            print $fh $sql;
            close $fh or die "sqlite3 failed";
            chmod 0644, $db;
        },
        server_conf => "LoadModule dbd_module $MODDIR/mod_dbd.so\nDBDriver sqlite3\n"
                     . "DBDParams \@DIR\@/names.db\n"
                     . "SipNameMap dbd \"SELECT users FROM namemap WHERE name = %s\"\n");
    common_checks($t, 'dbd');
    my ($rc, $out) = $t->_run_apache('-t');
    is($rc, 0, 'dbd: the configuration is accepted');
    $t->stop;
}

# ---------------------------------------------------------------- program
my $MAPPER = <<'EOF';
#!/usr/bin/perl
# one name per line in, the candidate users per line out
use strict;
use warnings;
my ($dir, $mode) = @ARGV;
$| = 1;
open(my $c, '>>', "$dir/starts") or die; print $c "$$\n"; close $c;
my %map = map { $_ => 'jqp' }
    qw(jqp public j.q.public john.q.public john_public johnpublic jpublic johnqpublic
       john.public j_public j.public jqpublic john_q_public j_q_public);
$map{john} = 'jqp jdoe';
$map{jdoe} = $map{'john.doe'} = 'jdoe';
while (my $n = <STDIN>) {
    chomp $n;
    open(my $q, '>>', "$dir/asked") or die; print $q "$n\n"; close $q;
    exit 0 if $n eq 'exit.now';
    # 'sleep': stuck for good from the first call to John.Q.Public on
    sleep 3600 while ($mode // '') eq 'sleep' && $n eq 'john.q.public';
    print(($map{$n} // ''), "\n");
}
EOF

sub lines_of {
    my ($file) = @_;
    open(my $fh, '<', $file) or return ();
    return map { chomp; $_ } <$fh>;
}

sub mapper_server {
    my ($mode) = @_;
    return SipRegTest->new(
        scripts => \%SCRIPTS,
        setup => sub {
            my $s = shift;
            open(my $fh, '>', $s->dir . '/mapper') or die $!;
            print $fh $MAPPER;
            close $fh;
            chmod 0755, $s->dir . '/mapper';
        },
        vhost_conf => qq{SipNameMap program "\@DIR\@/mapper \@VAR\@ $mode"});
}

{
    my $t = mapper_server('answer');
    my $var = $t->var;
    $calls = 0;
    common_checks($t, 'program');

    my ($f, $got);
    for my $i (1 .. 4) {
        ($f, $got) = call($t, name => 'John.Q.Public', method => 'MESSAGE');
    }
    my @starts = lines_of("$var/starts");
    cmp_ok($calls, '>=', 20, "program: $calls calls made");
    is(scalar(@starts), 1, "program: the mapper was started once for them")
        or diag(join ' ', @starts);
    my @asked = grep { $_ eq 'john.q.public' } lines_of("$var/asked");
    is(scalar(@asked), 1, 'program: John.Q.Public asked once, then answered from the cache');
    my @all = lines_of("$var/asked");
    ok(!grep({ /[A-Z%]/ } @all), 'program: the mapper is asked in lower case, %-decoded')
        or diag(join ' ', @all);

    # a mapper that exits: that call goes on unmapped, and it is started again
    ($f, $got) = call($t, name => 'exit.now', timeout => 4);
    like(code_of($f), qr/^(404|480)$/, 'program: a call whose mapper exits still gets an answer');
    # during the back-off (1 s) names go on as dialled, at once
    my $b0 = time;
    ($f, $got) = call($t, name => 'j_public', method => 'MESSAGE', timeout => 3);
    ok(!$got && code_of($f) =~ /^(404|480)$/ && time - $b0 < 0.9,
       'program: while it is down, a name goes on as dialled without waiting (' . code_of($f) . ')');
    like($t->error_log, qr/mapper \S+ is not running; names are left as dialled/,
         '... which is logged');
    ok(wait_until(8, sub { lines_of("$var/starts") == 2 }, 0.2),
       'program: a mapper that exited is started again');
    ok(wait_until(5, sub {
        my ($ff, $gg) = call($t, name => 'j_q_public', method => 'MESSAGE', timeout => 3);
        return $gg && code_of($ff) == 200;
    }, 0.5), 'program: ... and maps names again');
    like($t->error_log, qr/sip namemap: mapper \S+ \(pid \d+\) exited; restarting it/,
         'program: the exit is logged');
    $t->stop;
    ok(wait_until(5, sub { !grep { kill(0, $_) } lines_of("$var/starts") }, 0.2),
       'program: no mapper is left when httpd stops');
}

{
    my $t = mapper_server('sleep');
    my $var = $t->var;
    my $r = $t->register(user => 'jqp', contacts => [ "<sip:jqp\@127.0.0.1:$pport>" ],
                         expires => 600);
    is(code_of($r), 200, 'sleeping mapper: jqp registered');
    my $cs = $t->udp_socket;
    my $raw = $t->sip_request(method => 'MESSAGE', sock => $cs,
                              uri => 'sip:John.Q.Public@127.0.0.1:' . $t->sip_port);
    my $t0 = time;
    $t->udp_send($raw, sock => $cs);
    my $o0 = time;
    my $server = 'sip:127.0.0.1:' . $t->sip_port;
    ok($t->options_ok('udp', $server), 'sleeping mapper: OPTIONS answered meanwhile');
    ok($t->options_ok('tcp', $server), '... over TCP too');
    cmp_ok(time - $o0, '<', 1.5, '... at once');
    my $final;
    while (!$final && time - $t0 < 6) {
        my $d = $t->udp_recv($cs, 0.5) // next;
        my $m = parse_msg($d);
        $final = $m if $m->is_response && $m->code >= 200;
    }
    my $took = time - $t0;
    like(code_of($final), qr/^(404|480)$/,
         'sleeping mapper: the call gets an answer, the name unmapped (' . code_of($final) . ')');
    cmp_ok($took, '>=', 1.8, sprintf('... after the 2 s timeout (%.1f s)', $took));
    cmp_ok($took, '<', 4, '... not much later');
    like($t->error_log, qr/gave no answer for "john\.q\.public" within 2 s/,
         'sleeping mapper: the timeout is logged');
    is(scalar(lines_of("$var/starts")), 1, 'sleeping mapper: started once');

    # a CANCEL while the name waits for the mapper: 487 at once, and the
    # late end of the wait touches nothing (the transaction is gone)
    my $engine = $t->engine_pid;
    my $s = $t->tcp_connect;
    my $inv = $t->sip_request(method => 'INVITE', transport => 'TCP', sock => $s,
                              uri => 'sip:JPublic@127.0.0.1:' . $t->sip_port,
                              headers => [ Contact => '<sip:caller@127.0.0.1;transport=tcp>' ]);
    $t->send_raw($s, $inv);
    my $m = $t->read_response($s, 1);
    is(code_of($m), 100, 'sleeping mapper: INVITE to JPublic waits (100 Trying)');
    (my $cancel = $inv) =~ s/^INVITE /CANCEL /;
    $cancel =~ s/^(CSeq:\s*\d+) INVITE/$1 CANCEL/mi;
    $cancel =~ s/^Contact:[^\r\n]*\r\n//mi;
    my $c0 = time;
    $t->send_raw($s, $cancel);
    my (%got, $r487);
    for (1 .. 2) {
        my $r = $t->read_response($s, 2) or last;
        my ($meth) = $r->header('cseq') =~ /(\w+)$/;
        $got{$meth} = $r->code;
        $r487 = $r if $meth eq 'INVITE';
    }
    is($got{CANCEL}, 200, 'sleeping mapper: the CANCEL is answered 200');
    is($got{INVITE}, 487, '... and the INVITE 487 Request Terminated');
    cmp_ok(time - $c0, '<', 1, '... without waiting for the mapper');
    # the ACK ends the transaction at once over TCP (timer I is 0): the
    # wait's interest is dropped before the mapper's timeout
    $t->send_raw($s, $t->ack_for($inv, $r487)) if $r487;
    ok(wait_until(2, sub { $t->error_log =~ /request for "JPublic" ended while mapper/ }, 0.1),
       '... the ACK ends the transaction, which drops its interest in the answer');
    ok(wait_until(4, sub { $t->error_log =~ /no answer for "jpublic" within 2 s/ }, 0.2),
       '... whose wait then ends (logged)');
    sleep 0.5;
    is($t->engine_pid, $engine, '... the engine lives on after the wait ends');
    ok($t->options_ok('udp', 'sip:127.0.0.1:' . $t->sip_port), '... and serves');
    $t->stop;
    ok(wait_until(5, sub { !grep { kill(0, $_) } lines_of("$var/starts") }, 0.2),
       'sleeping mapper: killed when httpd stops');
}

done_testing;
