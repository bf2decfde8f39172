package redis_test

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
)

// TestHistorySoak loops the history scenarios with new seeds, each running
// soakLength, until -contextd.soak has passed, one scenario at a time:
//
//	go test -race -run TestHistorySoak -timeout 40m ./backend/redis -args -contextd.soak=30m
//
// A failed scenario logs its seed and the command that replays it. Soak
// runs also let Sentinel demote the old master by itself in half of the
// failovers (some 10 s, during which the instances' subscriptions stay on
// the old master), which the normal run shortcuts.
func TestHistorySoak(t *testing.T) {
	if *soakFlag <= 0 {
		t.Skip("soak runs only with -contextd.soak=<duration>")
	}
	const soakLength = 8 * time.Second
	seed := seedFor(t)
	rng := rand.New(rand.NewPCG(seed, 1))
	type scenario struct {
		name, replay string
		run          func(t *testing.T, seed uint64)
	}
	var scenarios []scenario
	for _, sc := range serverScenarios {
		scenarios = append(scenarios, scenario{sc.name, "TestHistory/" + sc.name, func(t *testing.T, seed uint64) {
			runServerScenario(t, sc, seed, soakLength)
		}})
	}
	for _, mode := range failoverModes {
		scenarios = append(scenarios, scenario{"failover-" + mode.name, "TestHistoryFailover/" + mode.name, func(t *testing.T, seed uint64) {
			runFailoverScenario(t, mode, seed, soakLength)
		}})
	}
	for _, kill := range []bool{false, true} {
		name := map[bool]string{false: "migrate", true: "kill-normal"}[kill]
		scenarios = append(scenarios, scenario{"cluster-" + name, "TestHistoryCluster/" + name, func(t *testing.T, seed uint64) {
			runClusterScenario(t, seed, soakLength, kill)
		}})
	}

	deadline := time.Now().Add(*soakFlag)
	runs, failed := 0, 0
	for round := 0; time.Now().Before(deadline); round++ {
		for _, sc := range scenarios {
			if !time.Now().Before(deadline) {
				break
			}
			seed := rng.Uint64()
			ok := t.Run(fmt.Sprintf("%d/%s", round, sc.name), func(t *testing.T) {
				t.Logf("seed %d", seed)
				t.Cleanup(func() {
					if t.Failed() {
						t.Logf("replay with: CONTEXTD_SEED=%d go test -race -run '%s' ./backend/redis -args -contextd.length=%v", seed, runPattern(sc.replay), soakLength)
					}
				})
				sc.run(t, seed)
			})
			runs++
			if !ok {
				failed++
			}
		}
	}
	t.Logf("%d scenarios run, %d failed", runs, failed)
}
