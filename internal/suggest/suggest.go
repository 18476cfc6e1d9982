// Package suggest finds the name an operator probably meant when a name is unknown: a
// configuration key, a template field, a connector type, a Pub/Sub subscription.
package suggest

import "strings"

// Closest returns the candidate that word is most likely a typo of, or "" when none is close
// enough. A candidate equal to word but for case wins outright; otherwise the candidate with the
// smallest edit distance (Distance, ignoring case) wins if it is at most two edits away and less than
// half of word changed, so that "ip" suggests nothing. Ties go to the alphabetically first
// candidate, so that the answer does not depend on the order of candidates.
func Closest(word string, candidates []string) string {
	best, bestDist := "", min(3, (len(word)+1)/2)
	lw := strings.ToLower(word)
	for _, c := range candidates {
		if strings.EqualFold(c, word) {
			return c
		}
		if d := Distance(strings.ToLower(c), lw); d < bestDist || (d == bestDist && best != "" && c < best) {
			best, bestDist = c, d
		}
	}
	return best
}

// Distance is the Levenshtein distance between a and b, counted in bytes, with the swap of two
// adjacent bytes counted as one edit (optimal string alignment), the commonest typo: "scpe" is
// one edit from "scep", not two.
func Distance(a, b string) int {
	// Three rows: the one before the previous is needed for transpositions.
	prev2 := make([]int, len(b)+1)
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return prev[len(b)]
}
