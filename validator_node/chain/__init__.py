"""validator_node/chain"""
