"""Online A/B experiments: sticky arms, feedback, a pre-registered test, promote / reject / continue."""
