"""validator_node/p2p"""
