/* netserv-pktgen: send one UDP flow's frames on an interface at a given rate.
 *
 *   netserv-pktgen IFACE SRC_MAC DST_MAC SRC_IP DST_IP DPORT FRAME_BYTES PPS SECONDS
 *
 * PPS 0 sends as fast as the interface takes them. Frames go out through an
 * AF_PACKET socket (qdisc bypassed) in sendmmsg batches of up to BATCH; the rate is
 * kept by a schedule (frames due since the start), sleeping until the next frame is
 * due, so a batch is never larger than what fell due. Prints one JSON line:
 * {"sent": N, "failed": N, "seconds": S}. Built by tools/setup.sh; a Python loop
 * cannot offer the rates the switch forwards.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <netinet/ip.h>
#include <netinet/udp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BATCH 64
#define MAX_FRAME 1514
#define MIN_FRAME 60

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void sleep_until(double t) {
    struct timespec ts = {(time_t)t, (long)((t - (time_t)t) * 1e9)};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
    }
}

static int parse_mac(const char *text, uint8_t *mac) {
    return sscanf(text, "%hhx:%hhx:%hhx:%hhx:%hhx:%hhx", &mac[0], &mac[1], &mac[2], &mac[3],
                  &mac[4], &mac[5]) == 6;
}

static uint16_t ip_checksum(const void *data, size_t len) {
    const uint16_t *p = data;
    uint32_t sum = 0;
    for (; len > 1; len -= 2) sum += *p++;
    while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
    return (uint16_t)~sum;
}

static void die(const char *what) {
    fprintf(stderr, "netserv-pktgen: %s: %s\n", what, strerror(errno));
    exit(1);
}

int main(int argc, char **argv) {
    if (argc != 10) {
        fprintf(stderr,
                "usage: netserv-pktgen IFACE SRC_MAC DST_MAC SRC_IP DST_IP DPORT FRAME_BYTES "
                "PPS SECONDS\n");
        return 2;
    }
    uint8_t frame[MAX_FRAME] = {0};
    struct ether_header *eth = (void *)frame;
    struct iphdr *ip = (void *)(frame + sizeof *eth);
    struct udphdr *udp = (void *)((uint8_t *)ip + sizeof *ip);
    int size = atoi(argv[7]);
    double pps = atof(argv[8]), seconds = atof(argv[9]);
    if (!parse_mac(argv[2], eth->ether_shost) || !parse_mac(argv[3], eth->ether_dhost) ||
        inet_pton(AF_INET, argv[4], &ip->saddr) != 1 ||
        inet_pton(AF_INET, argv[5], &ip->daddr) != 1 || size < MIN_FRAME || size > MAX_FRAME ||
        pps < 0 || seconds <= 0) {
        fprintf(stderr, "netserv-pktgen: bad argument (frame size %d..%d bytes)\n", MIN_FRAME,
                MAX_FRAME);
        return 2;
    }
    eth->ether_type = htons(ETHERTYPE_IP);
    ip->version = 4;
    ip->ihl = 5;
    ip->ttl = 64;
    ip->protocol = IPPROTO_UDP;
    ip->tot_len = htons(size - sizeof *eth);
    ip->check = ip_checksum(ip, sizeof *ip);
    udp->source = htons(40000);
    udp->dest = htons(atoi(argv[6]));
    udp->len = htons(size - sizeof *eth - sizeof *ip); /* UDP checksum 0: none */

    int fd = socket(AF_PACKET, SOCK_RAW, 0); /* protocol 0: receives nothing */
    if (fd < 0) die("socket");
    int one = 1, sndbuf = 4 << 20;
    setsockopt(fd, SOL_PACKET, PACKET_QDISC_BYPASS, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
    struct sockaddr_ll addr = {.sll_family = AF_PACKET, .sll_halen = ETH_ALEN};
    if (!(addr.sll_ifindex = if_nametoindex(argv[1]))) die(argv[1]);
    memcpy(addr.sll_addr, eth->ether_dhost, ETH_ALEN);
    if (bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0) die("bind");

    struct iovec iov = {frame, (size_t)size};
    struct mmsghdr msgs[BATCH];
    memset(msgs, 0, sizeof msgs);
    for (int i = 0; i < BATCH; i++) {
        msgs[i].msg_hdr.msg_iov = &iov;
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
    long long sent = 0, failed = 0;
    double t0 = now(), end = t0 + seconds, t;
    while ((t = now()) < end) {
        long long due = BATCH;
        if (pps > 0) {
            due = (long long)((t - t0) * pps) + 1 - sent - failed;
            if (due <= 0) {
                sleep_until(t0 + (sent + failed) / pps);
                continue;
            }
            if (due > BATCH) due = BATCH;
        }
        int n = sendmmsg(fd, msgs, (unsigned)due, 0);
        if (n < 0) {
            if (errno != ENOBUFS && errno != EAGAIN && errno != EINTR) die("sendmmsg");
            failed += 1; /* the first frame of the batch could not be queued */
            continue;
        }
        sent += n;
    }
    printf("{\"sent\": %lld, \"failed\": %lld, \"seconds\": %.6f}\n", sent, failed, now() - t0);
    return 0;
}
