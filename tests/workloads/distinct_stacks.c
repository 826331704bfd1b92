/* Distinct user stacks on demand, for the stack-storage test
 * (tests/tests/stack_storage.rs).
 *
 * Prints {"pid":P,"fd":F}, F its /dev/null. For every line read on stdin it makes the next BATCH
 * rounds; round v (0, 1, 2, ...) calls down through BITS frames,
 * kotel_test_bit1 where bit d of v is set and kotel_test_bit0 where not
 * (the outermost frame is bit 0), then writev()s v + 1 bytes to /dev/null.
 * So every round has its own user stack, and the byte count of each writev
 * says which stack it must carry. Prints {"rounds":N} after each batch and
 * exits at end of input. Build with -O0 -fno-omit-frame-pointer: every
 * frame is kept and none is a tail call. */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#define BITS 11
#define BATCH 16

static int devnull;
static char payload[1 << BITS];

__attribute__((noinline)) void kotel_test_leaf(unsigned v)
{
	struct iovec iov = { payload, v + 1 };

	if (writev(devnull, &iov, 1) != (ssize_t)(v + 1)) {
		perror("writev");
		_exit(1);
	}
}

__attribute__((noinline)) void kotel_test_bit0(unsigned v, int depth);
__attribute__((noinline)) void kotel_test_bit1(unsigned v, int depth);

/* Calls the frame of bit `depth`, or the leaf below the last one. */
static void kotel_test_down(unsigned v, int depth)
{
	if (depth == BITS)
		kotel_test_leaf(v);
	else if ((v >> depth) & 1)
		kotel_test_bit1(v, depth + 1);
	else
		kotel_test_bit0(v, depth + 1);
}

__attribute__((noinline)) void kotel_test_bit0(unsigned v, int depth)
{
	kotel_test_down(v, depth);
}

__attribute__((noinline)) void kotel_test_bit1(unsigned v, int depth)
{
	kotel_test_down(v, depth);
}

int main(void)
{
	char line[64];
	unsigned v = 0;

	devnull = open("/dev/null", O_WRONLY);
	if (devnull < 0) {
		perror("/dev/null");
		return 1;
	}
	memset(payload, 'k', sizeof(payload));
	printf("{\"pid\":%d,\"fd\":%d}\n", getpid(), devnull);
	fflush(stdout);
	while (fgets(line, sizeof(line), stdin)) {
		for (int i = 0; i < BATCH && v < (1u << BITS); i++, v++)
			kotel_test_down(v, 0);
		printf("{\"rounds\":%u}\n", v);
		fflush(stdout);
	}
	return 0;
}
