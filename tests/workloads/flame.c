/* The workload of the flame graph and OTLP profile tests (tests/tests/flame_graphs.rs,
 * tests/python/test_profiles.py), compiled by each with frame pointers and debug info:
 * one thread sleeps three times in kotel_test_block_here, another writes 64 KiB with
 * writev into a full pipe in kotel_test_write_slowly while a third drains it late, and a
 * fourth sends 1 MiB over loopback TCP with 4 KiB buffers, drained late, in
 * kotel_test_send_slowly. It prints {"pid":N}, waits for a line on stdin, runs, prints
 * what it measured itself as one JSON line, and waits for another line before exiting
 * (kotel symbolizes its stacks while its maps exist). argv[1], if given, names the
 * sleeping thread. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define SLEEPS 3
#define SLEEP_MS 40
#define WRITE_BYTES 65536
#define READ_DELAY_MS 150
#define SEND_BYTES (1 << 20)

static int fds[2], sock_out, sock_in;
static long prefill, slept_ns, write_ns, written, sleeper_tid, writer_tid;
static long send_ns, sent, sender_tid;

static long now_ns(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec * 1000000000L + t.tv_nsec;
}

/* libc's syscall wrappers keep no frame pointer, so a stack taken in the
 * kernel skips the frame of the function that called them: each named
 * function reaches its syscall through a helper of its own. */
__attribute__((noinline)) int kotel_test_sleep_once(long ms)
{
	struct timespec ts = { 0, ms * 1000000L };
	return nanosleep(&ts, NULL);
}

__attribute__((noinline)) ssize_t kotel_test_writev_once(struct iovec *iov, int n)
{
	return writev(fds[1], iov, n);
}

/* Through syscall(2): glibc's send() wrapper (cancellable) uses the frame
 * pointer register for its own data, so a stack walk stops inside it. */
__attribute__((noinline)) ssize_t kotel_test_send_once(const char *buf, size_t n)
{
	return syscall(SYS_sendto, sock_out, buf, n, 0, NULL, 0);
}

__attribute__((noinline)) void kotel_test_block_here(void)
{
	for (int i = 0; i < SLEEPS; i++) {
		long t0 = now_ns();
		if (kotel_test_sleep_once(SLEEP_MS)) {
			perror("nanosleep");
			_exit(1);
		}
		slept_ns += now_ns() - t0;
	}
}

__attribute__((noinline)) void kotel_test_write_slowly(void)
{
	static char buf[WRITE_BYTES];
	struct iovec iov[2] = { { buf, WRITE_BYTES / 2 }, { buf + WRITE_BYTES / 2, WRITE_BYTES / 2 } };
	memset(buf, 'k', sizeof buf);
	long t0 = now_ns();
	written = kotel_test_writev_once(iov, 2);
	write_ns = now_ns() - t0;
}

__attribute__((noinline)) void kotel_test_send_slowly(void)
{
	static char buf[SEND_BYTES];
	memset(buf, 's', sizeof buf);
	long t0 = now_ns();
	sent = kotel_test_send_once(buf, SEND_BYTES);
	send_ns = now_ns() - t0;
}

static void *sender(void *arg)
{
	sender_tid = syscall(SYS_gettid);
	kotel_test_send_slowly();
	return arg;
}

/* Drains the TCP connection late, as `reader` drains the pipe. */
static void *receiver(void *arg)
{
	static char buf[65536];
	long got = 0;
	struct timespec ts = { 0, READ_DELAY_MS * 1000000L };
	nanosleep(&ts, NULL);
	while (got < SEND_BYTES) {
		ssize_t n = read(sock_in, buf, sizeof buf);
		if (n <= 0) {
			perror("read socket");
			_exit(1);
		}
		got += n;
	}
	return arg;
}

/* A loopback TCP connection with small buffers: the send waits for the receiver. */
static int tcp_pair(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof a;
	int small = 4096, l = socket(AF_INET, SOCK_STREAM, 0);
	sock_out = socket(AF_INET, SOCK_STREAM, 0);
	if (l < 0 || sock_out < 0 || setsockopt(l, SOL_SOCKET, SO_RCVBUF, &small, sizeof small) ||
	    setsockopt(sock_out, SOL_SOCKET, SO_SNDBUF, &small, sizeof small) ||
	    bind(l, (struct sockaddr *)&a, sizeof a) || listen(l, 1) ||
	    getsockname(l, (struct sockaddr *)&a, &len) ||
	    connect(sock_out, (struct sockaddr *)&a, sizeof a))
		return -1;
	sock_in = accept(l, NULL, NULL);
	close(l);
	return sock_in < 0 ? -1 : 0;
}

static const char *sleeper_name;

static void *sleeper(void *arg)
{
	sleeper_tid = syscall(SYS_gettid);
	if (sleeper_name)
		pthread_setname_np(pthread_self(), sleeper_name);
	kotel_test_block_here();
	return arg;
}

static void *writer(void *arg)
{
	writer_tid = syscall(SYS_gettid);
	kotel_test_write_slowly();
	return arg;
}

static void *reader(void *arg)
{
	static char buf[4096];
	long want = prefill + WRITE_BYTES, got = 0;
	struct timespec ts = { 0, READ_DELAY_MS * 1000000L };
	nanosleep(&ts, NULL);
	while (got < want) {
		ssize_t n = read(fds[0], buf, sizeof buf);
		if (n <= 0) {
			perror("read");
			_exit(1);
		}
		got += n;
	}
	return arg;
}

int main(int argc, char **argv)
{
	char line[16], fill[4096];
	pthread_t r, w, s, tx, rx;
	ssize_t n;
	/* An optional name for the sleeping thread (at most 15 bytes). */
	if (argc > 1)
		sleeper_name = argv[1];
	if (tcp_pair())
		return 1;
	/* The smallest pipe, filled: the writev waits for the late reader. */
	if (pipe(fds) || fcntl(fds[1], F_SETPIPE_SZ, 4096) < 0 || fcntl(fds[1], F_SETFL, O_NONBLOCK))
		return 1;
	memset(fill, 'f', sizeof fill);
	while ((n = write(fds[1], fill, sizeof fill)) > 0)
		prefill += n;
	if (fcntl(fds[1], F_SETFL, 0))
		return 1;
	printf("{\"pid\":%d}\n", getpid());
	fflush(stdout);
	if (!fgets(line, sizeof line, stdin))
		return 1;
	if (pthread_create(&r, NULL, reader, NULL) || pthread_create(&w, NULL, writer, NULL) ||
	    pthread_create(&s, NULL, sleeper, NULL) || pthread_create(&rx, NULL, receiver, NULL) ||
	    pthread_create(&tx, NULL, sender, NULL))
		return 1;
	pthread_join(s, NULL);
	pthread_join(w, NULL);
	pthread_join(r, NULL);
	pthread_join(tx, NULL);
	pthread_join(rx, NULL);
	printf("{\"sleeper\":%ld,\"slept_ns\":%ld,\"writer\":%ld,\"write_ns\":%ld,"
	       "\"written\":%ld,\"sender\":%ld,\"send_ns\":%ld,\"sent\":%ld}\n",
	       sleeper_tid, slept_ns, writer_tid, write_ns, written, sender_tid, send_ns, sent);
	fflush(stdout);
	/* Alive until told: kotel symbolizes its stacks while its maps exist. */
	if (!fgets(line, sizeof line, stdin))
		return 1;
	return 0;
}
